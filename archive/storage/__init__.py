"""archive.storage.base."""
