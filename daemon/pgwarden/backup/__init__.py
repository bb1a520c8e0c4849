"""Backups: dump (``take``), manifest, snapshot facts, compression stages, readback checks,
retention planning, restore drills and restores.  ``jobs`` adapts them to the daemon."""
