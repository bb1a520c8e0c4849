"""Taking a backup: the dump plan, the ``pg_dump`` pipeline, the snapshot facts recorded with it,
and the read-back that proves the archive whole before it is published."""
