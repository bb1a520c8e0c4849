"""The encryption stage: age v1 (https://age-encryption.org/v1) through ``pyrage``, streamed.

Encryption needs only recipients (``age1...`` X25519 public keys, from the config); decryption
needs identities (``AGE-SECRET-KEY-1...``), read from a file or a systemd credential given at
restore time and never stored by pgwarden.  Memory stays bounded: pyrage works on 64 KiB chunks.
A manifest records the scheme and each recipient's fingerprint, never a key.  A stream
encrypted here decrypts with the stock tool: ``age -d -i key.txt X.dump.zst.age``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

AGE_SCHEME = "age-v1"
AGE_SUFFIX = ".age"


@dataclass(frozen=True)
class RecipientFacts:
    """What a manifest says about one recipient: its fingerprint only."""

    fingerprint: str  # "sha256:" + 16 hex digits of sha256(recipient string)


def recipient_fingerprint(recipient: str) -> str:
    """A stable, short, non-secret id of a recipient, for manifests and error messages."""
    raise NotImplementedError


def check_recipient(recipient: str) -> str | None:
    """``None`` if ``recipient`` parses as an age X25519 recipient, else the problem."""
    raise NotImplementedError


def encrypted_size(plain_size: int) -> int:
    """An upper bound of the ciphertext's size for a ``plain_size``-byte plaintext."""
    raise NotImplementedError


def encrypt_stream(source: BinaryIO, sink: BinaryIO, recipients: tuple[str, ...]) -> None:
    """Encrypt ``source`` to every recipient into ``sink`` (streamed, bounded memory)."""
    raise NotImplementedError


def load_identities(path: Path) -> tuple[object, ...]:
    """The identities in an age identity file (``age-keygen`` output; comments allowed).

    :class:`~pgwarden.errors.CredentialError` naming the file (never its content) if it is
    unreadable, readable by others, or holds no identity."""
    raise NotImplementedError


def decrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    identities: tuple[object, ...],
    *,
    needed: tuple[RecipientFacts, ...] = (),
) -> None:
    """Decrypt ``source`` into ``sink``.  A wrong or missing identity raises
    :class:`~pgwarden.errors.CredentialError` naming the recipients' fingerprints the backup was
    encrypted to (``needed``) and those of the identities given."""
    raise NotImplementedError
