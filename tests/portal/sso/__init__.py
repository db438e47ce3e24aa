"""Tests of portal/sso, mirroring the source tree."""
