"""Tests of portal/accounts, mirroring the source tree."""
