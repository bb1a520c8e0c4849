"""Kept for the control server's imports: :func:`pgwarden.redaction.redact_value` is the
socket's last line of defence against secrets (JSON-safe, secrets hidden by type, key and
pattern); it lives in :mod:`pgwarden.redaction` with the rest of the redaction."""

from pgwarden.redaction import redact_value as redact

__all__ = ["redact"]
