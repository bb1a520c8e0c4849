"""The encryption stage: age v1 (https://age-encryption.org/v1) through ``pyrage``, streamed.

Encryption needs only recipients (``age1...`` X25519 public keys, from the config); decryption
needs identities (``AGE-SECRET-KEY-1...``), read from a file or a systemd credential given at
restore time and never stored by pgwarden.  Memory stays bounded: pyrage reads 8 KiB at a time
and seals 64 KiB chunks.  A manifest records the scheme and each recipient's fingerprint, never
a key.  A stream encrypted here decrypts with the stock tool: ``age -d -i key.txt X.dump.zst.age``.

pyrage turns an exception raised by the source or the sink (a cancelled upload, a full disk)
into its own ``EncryptError``/``DecryptError`` holding only a string; the streams are wrapped so
that the original exception is raised again, unchanged.  An identity's secret never reaches a
message: an :class:`AgeIdentity` shows its file and its public recipient only.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyrage

from pgwarden.config.offsite import recipient_problem
from pgwarden.config.secretfiles import credential_path, read_at_most
from pgwarden.errors import CredentialError, OffsiteError

AGE_SCHEME = "age-v1"
AGE_SUFFIX = ".age"
AGE_CHUNK = 64 * 1024  # plaintext bytes per sealed chunk
AGE_TAG = 16  # Poly1305 tag per chunk
#: the header's fixed part (version line, MAC line) plus the payload nonce
_HEADER_FIXED = 22 + 48 + 16
#: one X25519 stanza is 98 bytes; rage also adds one random "grease" stanza (seen <= 200)
_STANZA_MAX = 128
_GREASE_MAX = 512
#: an identity file bigger than this is not an identity file
MAX_IDENTITY_FILE_BYTES = 64 * 1024
_IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


@dataclass(frozen=True)
class RecipientFacts:
    """What a manifest says about one recipient: its fingerprint only."""

    fingerprint: str  # "sha256:" + 16 hex digits of sha256(recipient string)


@dataclass(frozen=True)
class AgeIdentity:
    """One decryption identity: where it came from and its public recipient; the key itself
    is neither shown nor compared."""

    source: str  # the identity file (or credential) it was read from
    recipient: str  # its public key, age1...
    key: object = field(repr=False, compare=False)  # pyrage.x25519.Identity

    @property
    def fingerprint(self) -> str:
        return recipient_fingerprint(self.recipient)


def recipient_fingerprint(recipient: str) -> str:
    """A stable, short, non-secret id of a recipient, for manifests and error messages."""
    return "sha256:" + hashlib.sha256(recipient.encode()).hexdigest()[:16]


def recipient_facts(recipients: tuple[str, ...]) -> tuple[RecipientFacts, ...]:
    """The manifest's view of ``recipients``."""
    return tuple(RecipientFacts(recipient_fingerprint(r)) for r in recipients)


def check_recipient(recipient: str) -> str | None:
    """``None`` if ``recipient`` parses as an age X25519 recipient, else the problem (which
    never repeats the value)."""
    return recipient_problem(recipient)


def encrypted_size(plain_size: int, recipients: int = 16) -> int:
    """An upper bound of the ciphertext's size for a ``plain_size``-byte plaintext encrypted
    to ``recipients`` recipients: exact payload (64 KiB chunks, a 16-byte tag each, at least
    one chunk) plus a header bound (the default assumes up to 16 recipients)."""
    if plain_size < 0:
        raise ValueError(f"plain_size must be >= 0 (got {plain_size})")
    chunks = max(1, -(-plain_size // AGE_CHUNK))
    header = _HEADER_FIXED + _STANZA_MAX * max(1, recipients) + _GREASE_MAX
    return header + plain_size + AGE_TAG * chunks


def encrypt_stream(source: BinaryIO, sink: BinaryIO, recipients: tuple[str, ...]) -> None:
    """Encrypt ``source`` to every recipient into ``sink`` (streamed, bounded memory).

    An exception of ``source`` or ``sink`` is raised again as it was; a recipient that does not
    parse is an :class:`OffsiteError` naming its fingerprint."""
    if not recipients:
        raise OffsiteError("cannot encrypt: no age recipient given")
    parsed = []
    for recipient in recipients:
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(recipient))
        except pyrage.RecipientError:
            fingerprint = recipient_fingerprint(recipient)
            raise OffsiteError(f"cannot encrypt: recipient {fingerprint} is invalid") from None
    reader, writer = _Guarded(source), _Guarded(sink)
    try:
        pyrage.encrypt_io(reader, writer, parsed)
    except (pyrage.EncryptError, OSError) as exc:
        _raise_stream_error(reader, writer)
        raise OffsiteError(f"cannot encrypt: {exc}") from None


def load_identities(path: Path) -> tuple[AgeIdentity, ...]:
    """The identities in an age identity file (``age-keygen`` output; comments allowed).

    :class:`~pgwarden.errors.CredentialError` naming the file (never its content) if it is
    unreadable, readable by others, or holds no identity."""
    return _parse_identities(_read_private(path), str(path))


def load_identity_credential(name: str) -> tuple[AgeIdentity, ...]:
    """The identities in systemd credential ``name`` (``$CREDENTIALS_DIRECTORY/<name>``)."""
    source = f"identity credential {name!r}"
    # systemd hands a credential over as 0440 (root's group, the unit's user through an ACL)
    # in a directory private to the unit: group access is its own, not another user's
    text = _read_private(credential_path(name, source), group_ok=True)
    return _parse_identities(text, source)


def identity_recipients(identities: tuple[object, ...]) -> tuple[str, ...]:
    """The public recipients (``age1...``) of ``identities``."""
    return tuple(_public(i) for i in identities)


def decrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    identities: tuple[object, ...],
    *,
    needed: tuple[RecipientFacts, ...] = (),
) -> None:
    """Decrypt ``source`` into ``sink``.  A wrong or missing identity raises
    :class:`~pgwarden.errors.CredentialError` naming the recipients' fingerprints the backup was
    encrypted to (``needed``) and those of the identities given; a damaged or truncated stream
    is an :class:`~pgwarden.errors.OffsiteError`."""
    if not identities:
        raise CredentialError(
            f"cannot decrypt: no identity given; {_needed_text(needed)} -- pass --identity FILE "
            "(the age-keygen key file) or the systemd credential holding it"
        )
    keys = [i.key if isinstance(i, AgeIdentity) else i for i in identities]
    reader, writer = _Guarded(source), _Guarded(sink)
    try:
        pyrage.decrypt_io(reader, writer, keys)
    except (pyrage.DecryptError, OSError) as exc:  # OSError: a bad chunk, mid-stream
        _raise_stream_error(reader, writer)
        if "no matching keys" in str(exc).lower():
            raise CredentialError(_wrong_identity(identities, needed)) from None
        raise OffsiteError(f"cannot decrypt: the encrypted stream is damaged ({exc})") from None


# -- helpers ------------------------------------------------------------------------------
def _needed_text(needed: tuple[RecipientFacts, ...]) -> str:
    if not needed:
        return "the manifest names no recipient"
    return "the backup was encrypted to recipient(s) " + ", ".join(f.fingerprint for f in needed)


def _wrong_identity(identities: tuple[object, ...], needed: tuple[RecipientFacts, ...]) -> str:
    held: dict[str, list[str]] = {}
    for identity in identities:
        source = identity.source if isinstance(identity, AgeIdentity) else "the identity given"
        public = _public(identity)
        held.setdefault(source, []).append(f"{recipient_fingerprint(public)} ({public})")
    holds = "; ".join(f"{src} holds {', '.join(keys)}" for src, keys in held.items())
    return f"cannot decrypt: {_needed_text(needed)}; {holds}"


def _public(identity: object) -> str:
    if isinstance(identity, AgeIdentity):
        return identity.recipient
    to_public = getattr(identity, "to_public", None)
    if to_public is None:
        raise TypeError(f"not an age identity: {type(identity).__name__}")
    return str(to_public())


def _read_private(path: Path, *, group_ok: bool = False) -> str:
    """An identity file's text; refused when others (or, unless ``group_ok``, its group) may
    access it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise CredentialError(f"identity file {path}: cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"identity file {path}: not a regular file")
        if st.st_mode & (stat.S_IRWXO if group_ok else stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"identity file {path}: accessible by other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); a secret key must be chmod 0600"
            )
        raw = read_at_most(fd, MAX_IDENTITY_FILE_BYTES + 1)
    except OSError as exc:
        raise CredentialError(f"identity file {path}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_IDENTITY_FILE_BYTES:
        raise CredentialError(f"identity file {path}: too large to be an age identity file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"identity file {path}: not valid UTF-8") from None


def _parse_identities(text: str, source: str) -> tuple[AgeIdentity, ...]:
    found: list[AgeIdentity] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        problem = f"{source}: line {number} is not an age X25519 identity (AGE-SECRET-KEY-1...)"
        if not line.startswith(_IDENTITY_PREFIX):
            raise CredentialError(problem)
        try:
            key = pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError:
            raise CredentialError(problem) from None
        found.append(AgeIdentity(source=source, recipient=str(key.to_public()), key=key))
    if not found:
        raise CredentialError(f"{source}: holds no age identity (AGE-SECRET-KEY-1...)")
    return tuple(found)


def _raise_stream_error(*streams: _Guarded) -> None:
    for stream in streams:
        if stream.error is not None:
            raise stream.error


class _Guarded(io.RawIOBase):
    """A file object pyrage reads or writes through, remembering the inner stream's first
    exception (pyrage keeps only its text)."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            readinto = getattr(self._inner, "readinto", None)
            if readinto is not None:
                count = readinto(buffer)
                return 0 if count is None else int(count)
            data = self._inner.read(len(buffer))
            memoryview(buffer)[: len(data)] = data
            return len(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            count = self._inner.write(data)
            return len(data) if count is None else count
        except BaseException as exc:
            self.error = self.error or exc
            raise
