"""portal.mfa.factors."""
