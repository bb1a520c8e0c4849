"""Bytes and formats only: the manifest, compression stages, zstd frames, the custom archive's
table of contents, and digests of artifacts on disk.  No database, no process, no catalog."""
