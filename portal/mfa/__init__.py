"""Multi-factor authentication: TOTP devices, backup codes, and the middleware that enforces them."""
