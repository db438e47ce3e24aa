"""Tests of the scripts that `make run` and `make test` call."""
