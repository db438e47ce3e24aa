"""archive.ingest.store."""
