"""archive.dicomweb."""
