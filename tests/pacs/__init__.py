"""Tests of pacs, mirroring the source tree."""
