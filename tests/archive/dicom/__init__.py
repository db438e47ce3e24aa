"""Tests of archive/dicom, mirroring the source tree."""
