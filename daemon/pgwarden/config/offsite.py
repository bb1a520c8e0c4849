"""The shape of ``[[offsite]]``: an S3-compatible destination for off-site copies of backups.

A destination is named (``[a-z0-9_-]``), referenced by ``[[targets]] offsite = [...]`` (absent:
every destination).  Objects are laid out as ``<prefix><target>/<artifact>[.age]`` beside
``<prefix><target>/<artifact>.manifest.json``; the manifest is uploaded last.  Keys come from the
environment, a file or a systemd credential (never inline unless plaintext passwords are allowed);
none set means boto3's own chain (``AWS_*`` variables, ``~/.aws``, an instance role).
Encryption names age *recipients* (public keys) only: a config never holds a secret key.

:func:`recipient_problem` is the one check of a recipient string (here, in the lowest layer
that needs it; :func:`pgwarden.archive.encrypt.check_recipient` is the same function).
Parsing ``[[offsite]]`` lives in :mod:`pgwarden.config.offsite_build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from pgwarden.redaction import Secret

OFFSITE_KINDS = ("s3",)
ADDRESSING_STYLES = ("auto", "path", "virtual")
#: how the whole object is proven to be what was sent
OFFSITE_CHECKSUMS = ("auto", "sha256", "md5")
#: S3's bounds for one part of a multipart upload
MIN_PART_SIZE = 5 * 1024**2
MAX_PART_SIZE = 5 * 1024**3
AGE_RECIPIENT_PREFIX = "age1"
#: AGE-SECRET-KEY-1..., AGE-PLUGIN-...: identities, never recipients
_IDENTITY_PREFIX = "AGE-"


def recipient_problem(recipient: str) -> str | None:
    """``None`` if ``recipient`` is an age X25519 recipient (``age1...``), else why not.

    The message never repeats the value: a secret key pasted by mistake must not reach a log."""
    if recipient.strip().upper().startswith(_IDENTITY_PREFIX):
        return (
            "this is an age secret key (identity), not a recipient: a config never holds a "
            "secret key -- put its public key here (age-keygen -y KEYFILE prints it), keep the "
            "key file off this server, and treat the key as exposed"
        )
    if not recipient.startswith(AGE_RECIPIENT_PREFIX):
        return "not an age X25519 recipient: a public key starts with 'age1' (age-keygen -y)"
    try:
        pyrage.x25519.Recipient.from_str(recipient)
    except pyrage.RecipientError:
        return "not a valid age X25519 recipient (bad Bech32 encoding or length)"
    return None


@dataclass(frozen=True)
class SecretSource:
    """Where one secret string comes from; nothing set: the library's default chain."""

    env: str | None = None
    file: Path | None = None
    credential: str | None = None
    value: Secret | None = None  # inline, only with [daemon] allow_plaintext_passwords

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.env, self.file, self.credential, self.value))


@dataclass(frozen=True)
class OffsiteEncryption:
    """age v1 encryption of the uploaded object, to every recipient (``age1...`` public keys)."""

    recipients: tuple[str, ...]


@dataclass(frozen=True)
class OffsiteRetention:
    """The remote copies' own policy; the local planner and its invariants apply unchanged."""

    keep_days: int = 30
    min_keep: int = 3
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0


@dataclass(frozen=True)
class OffsiteConfig:
    """One ``[[offsite]]`` destination, validated (see the module docstring)."""

    name: str
    bucket: str
    kind: str = "s3"
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    access_key_id: SecretSource = field(default_factory=SecretSource)
    secret_access_key: SecretSource = field(default_factory=SecretSource)
    encryption: OffsiteEncryption | None = None
    retention: OffsiteRetention = field(default_factory=OffsiteRetention)
    checksum: str = "auto"
    part_size: int | None = None  # bytes, a floor (raised to fit 10,000 parts); None: from size
    timeout: float = 60.0  # seconds, every single S3 call (connect and read)
    stall_timeout: float = 300.0  # an upload or download moving no bytes this long is cancelled
    retries: int = 5  # throttling and 5xx only, with exponential backoff
