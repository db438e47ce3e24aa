"""portal.sso."""
