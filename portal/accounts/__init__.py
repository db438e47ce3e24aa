"""Accounts: sign-in and sign-out, password reset, sessions, lockout, and the roles people hold."""
