"""portal.accounts."""
