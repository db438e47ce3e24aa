"""Tests of archive/dicomweb, mirroring the source tree."""
