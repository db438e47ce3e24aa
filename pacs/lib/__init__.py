"""Helpers that belong to no app: SQL built once per database vendor, the SQLite writer queue."""
