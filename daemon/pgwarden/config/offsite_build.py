"""Building ``[[offsite]]`` destinations and the targets' ``offsite = [...]`` from decoded TOML.

Every rule of the off-site contract is checked here, each problem with its key path
(``offsite[0].bucket: ...``), through the same :class:`~pgwarden.config.reader.Reader` as the
other sections: names ``[a-z0-9_-]`` and unique, an S3 bucket name, a prefix without a leading
``/`` (normalised to end with ``/``), an http(s) endpoint without credentials in it, one source
per key and both keys or neither, inline keys only with ``[daemon] allow_plaintext_passwords``,
age recipients that are public keys (a secret key is refused and never repeated), a remote
retention policy, no two destinations on the same endpoint, bucket and prefix, and the
cross-checks with the targets (names exist; a ``directory`` dump is many files and cannot be
copied).  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from pgwarden.config.model import TargetConfig
from pgwarden.config.offsite import (
    ADDRESSING_STYLES,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    OFFSITE_CHECKSUMS,
    OFFSITE_KINDS,
    OffsiteConfig,
    OffsiteEncryption,
    OffsiteRetention,
    recipient_problem,
)
from pgwarden.config.reader import Reader
from pgwarden.config.secretkeys import read_secret_source

_NAME = re.compile(r"[a-z0-9_-]{1,63}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PREFIX_MAX = 512  # S3 keys stop at 1024 bytes; the rest is <target>/<artifact>
DIRECTORY_REFUSED = (
    "off-site copies need format custom or plain: a directory dump is many files; "
    'use format = "custom"'
)


def destinations(root: Reader, plaintext_ok: bool) -> tuple[OffsiteConfig, ...]:
    """Every ``[[offsite]]`` table, validated; the names are unique."""
    found = [_destination(sub, plaintext_ok) for sub in root.table_array("offsite")]
    names = [d.name for d in found if d is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        root.error("offsite", f"destination name {dup!r} is used more than once")
    _same_place(root, found)
    return tuple(d for d in found if d is not None)


def _same_place(root: Reader, found: Sequence[OffsiteConfig | None]) -> None:
    """Two destinations on one endpoint, bucket and prefix write the same keys: each one's
    retention would delete the copies the other counts as confirmed."""
    seen: dict[tuple[str, str, str], str] = {}
    for index, d in enumerate(found):
        if d is None:
            continue
        place = (d.endpoint_url or "", d.bucket, d.prefix)
        if place in seen:
            _error_at(
                root,
                f"offsite[{index}].prefix",
                f"destination {d.name!r} is the same bucket and prefix as {seen[place]!r} "
                f"(s3://{d.bucket}/{d.prefix}): both would write, and prune, the same objects; "
                "give each its own prefix",
            )
        else:
            seen[place] = d.name


def target_offsite(r: Reader) -> tuple[str, ...] | None:
    """A target's ``offsite = [...]``: ``None`` when absent (every destination)."""
    if "offsite" not in r.data:
        return None
    names = r.str_list("offsite")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        r.error("offsite", f"destination {dup!r} is listed more than once")
    return tuple(dict.fromkeys(names))


def check_targets(
    root: Reader,
    targets: Sequence[TargetConfig | None],
    offsite: tuple[OffsiteConfig, ...],
) -> None:
    """Each target's destinations exist; a directory-format target has none."""
    known = [o.name for o in offsite]
    for index, target in enumerate(targets):
        if target is None:
            continue
        chosen = known if target.offsite is None else list(target.offsite)
        for name in chosen:
            if name not in known:
                _error_at(
                    root,
                    f"targets[{index}].offsite",
                    f"unknown off-site destination {name!r} "
                    f"(configured: {', '.join(known) or 'none'})",
                )
        if chosen and target.backup.format == "directory":
            _error_at(
                root,
                f"targets[{index}].backup.format",
                f"{DIRECTORY_REFUSED} (or offsite = [] for this target)",
            )


def _error_at(r: Reader, path: str, message: str) -> None:
    """A problem at a full key path that holds an index (``targets[0].offsite``)."""
    r.errors.append(f"{path}: {message}")


def any_inline_secret(offsite: tuple[OffsiteConfig, ...]) -> bool:
    """True if a destination holds a key in the file (plaintext opt-in)."""
    return any(
        src.value is not None for o in offsite for src in (o.access_key_id, o.secret_access_key)
    )


def _destination(r: Reader, plaintext_ok: bool) -> OffsiteConfig | None:
    d = OffsiteConfig(name="", bucket="")
    name = _name(r)
    bucket = _bucket(r)
    access_key_id = read_secret_source(r, "access_key_id", plaintext_ok, noun="key")
    secret_access_key = read_secret_source(r, "secret_access_key", plaintext_ok, noun="key")
    if access_key_id.configured != secret_access_key.configured:
        missing = "secret_access_key" if access_key_id.configured else "access_key_id"
        r.error(
            missing,
            "access_key_id and secret_access_key go together: set a source for both "
            "(or neither, for boto3's own chain: AWS_* variables, ~/.aws, an instance role)",
        )
    out = OffsiteConfig(
        name=name or "",
        bucket=bucket or "",
        kind=r.choice("kind", d.kind, OFFSITE_KINDS),
        prefix=_prefix(r),
        endpoint_url=_endpoint_url(r),
        region=_region(r),
        addressing_style=r.choice("addressing_style", d.addressing_style, ADDRESSING_STYLES),
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        encryption=_encryption(r),
        retention=_retention(r.section("retention")),
        checksum=r.choice("checksum", d.checksum, OFFSITE_CHECKSUMS),
        part_size=r.opt_int("part_size", minimum=MIN_PART_SIZE, maximum=MAX_PART_SIZE),
        timeout=r.number("timeout", d.timeout, minimum=1, maximum=3600),
        stall_timeout=r.number("stall_timeout", d.stall_timeout, minimum=1, maximum=86400),
        retries=r.integer("retries", d.retries, minimum=0, maximum=20),
    )
    r.finish()
    return out if name and bucket else None


def _name(r: Reader) -> str | None:
    value = r.string("name", required=True)
    if not value:
        return None
    if not _NAME.fullmatch(value):
        r.error("name", f"must be 1-63 of a-z, 0-9, '_' and '-' (got {value!r})")
        return None
    return value


def _bucket(r: Reader) -> str | None:
    value = r.string("bucket", required=True)
    if not value:
        return None
    problem = bucket_problem(value)
    if problem is not None:
        r.error("bucket", f"{problem} (got {value!r})")
        return None
    return value


def bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name (the general-purpose bucket rules)."""
    if not _BUCKET.fullmatch(name):
        return (
            "an S3 bucket name is 3-63 characters: lower-case letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "an S3 bucket name has no '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "an S3 bucket name cannot look like an IP address"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        return "an S3 bucket name cannot start with xn--/sthree- or end with -s3alias/--ol-s3"
    return None


def _prefix(r: Reader) -> str:
    value = r.string("prefix", "")
    if not value:
        return ""
    problem = None
    if value.startswith("/"):
        problem = "must not start with '/' (object keys are relative to the bucket)"
    elif any(ord(c) < 32 or c in "\\\x7f" for c in value):
        problem = "must not contain control characters or '\\'"
    elif "//" in value or any(part in (".", "..") for part in value.split("/")):
        problem = "must not contain '//', '.' or '..' segments"
    elif len(value.encode()) > _PREFIX_MAX:
        problem = f"must be at most {_PREFIX_MAX} bytes"
    if problem is not None:
        r.error("prefix", f"{problem} (got {value!r})")
        return ""
    return value if value.endswith("/") else value + "/"


def _endpoint_url(r: Reader) -> str | None:
    value = r.opt_str("endpoint_url")
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        r.error("endpoint_url", "not a valid URL (the value is not repeated: it may hold a key)")
        return None
    if "@" in parts.netloc:
        r.error(
            "endpoint_url",
            "must not hold credentials (user:password@); give the keys with "
            "access_key_id_* and secret_access_key_* instead (the value is not repeated)",
        )
        return None
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be an http:// or https:// URL with a host"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "must be scheme://host[:port] only: the bucket and prefix have keys of their own"
    elif port == 0:
        problem = "the port must be 1-65535"
    if problem is not None:
        r.error("endpoint_url", f"{problem} (got {value!r})")
        return None
    return value.rstrip("/")


def _region(r: Reader) -> str | None:
    value = r.opt_str("region")
    if value is not None and not _REGION.fullmatch(value):
        r.error("region", f"must be a region name such as eu-central-003 (got {value!r})")
        return None
    return value


def _encryption(r: Reader) -> OffsiteEncryption | None:
    e = r.section("encryption")  # a value that is not a table is reported there
    if not isinstance(r.data.get("encryption"), dict):
        return None
    raw = e.data.get("recipients")
    recipients: list[str] = []
    if raw is None:
        e.error("recipients", "is required: the age public keys (age1...) to encrypt to")
    elif not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        e.error("recipients", "must be an array of strings (age1... public keys)")
    elif not raw:
        e.error("recipients", "needs at least one age public key (age1...)")
    else:
        for index, recipient in enumerate(raw):
            problem = recipient_problem(recipient)
            if problem is not None:
                _error_at(e, f"{e.key_path('recipients')}[{index}]", problem)
            elif recipient in recipients:
                _error_at(e, f"{e.key_path('recipients')}[{index}]", "is listed more than once")
            else:
                recipients.append(recipient)
    e.mark("recipients")
    e.finish()
    return OffsiteEncryption(recipients=tuple(recipients))


def _retention(rr: Reader) -> OffsiteRetention:
    d = OffsiteRetention()
    out = OffsiteRetention(
        keep_days=rr.integer("keep_days", d.keep_days, minimum=1, maximum=36500),
        min_keep=rr.integer("min_keep", d.min_keep, minimum=1, maximum=10000),
        keep_daily=rr.integer("keep_daily", d.keep_daily, minimum=0, maximum=10000),
        keep_weekly=rr.integer("keep_weekly", d.keep_weekly, minimum=0, maximum=10000),
        keep_monthly=rr.integer("keep_monthly", d.keep_monthly, minimum=0, maximum=10000),
    )
    rr.finish()
    return out
