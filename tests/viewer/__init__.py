"""Tests of viewer, mirroring the source tree."""
