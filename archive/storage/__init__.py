"""Object storage for Part 10 files: named tiers over backends chosen by dotted path (``registry``)."""
