"""archive.dimse.listener."""
