"""Tests of archive/ingest, mirroring the source tree."""
