"""audit.management."""
