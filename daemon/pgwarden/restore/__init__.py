"""Reading a backup back into PostgreSQL: locating it, staging its bytes, ``pg_restore`` into a
scratch database, the drill's checks and outcome, and the operator's real restore."""
