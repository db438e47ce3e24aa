"""``audit_export``, ``audit_forward`` and ``audit_verify``."""
