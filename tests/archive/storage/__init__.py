"""Tests of archive/storage, mirroring the source tree."""
