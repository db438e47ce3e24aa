"""The audit trail: append-only, hash-chained records of every access and change."""
