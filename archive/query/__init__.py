"""archive.query."""
