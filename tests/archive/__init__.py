"""Tests of archive, mirroring the source tree."""
