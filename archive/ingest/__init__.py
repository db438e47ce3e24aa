"""The one ingest path: every stored instance (STOW-RS, C-STORE, demo, reindex) goes through ``store``."""
