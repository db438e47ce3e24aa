"""Tests of portal, mirroring the source tree."""
