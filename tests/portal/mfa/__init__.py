"""Tests of portal/mfa, mirroring the source tree."""
