"""audit.management.commands."""
