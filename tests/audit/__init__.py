"""Tests of audit, mirroring the source tree."""
