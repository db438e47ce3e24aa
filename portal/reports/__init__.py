"""Radiology reports: templates, drafts with optimistic versioning, sign-off, addenda, critical results."""
