"""pacs.lib."""
