"""Management commands of the audit trail."""
