"""Tests of archive/dimse, mirroring the source tree."""
