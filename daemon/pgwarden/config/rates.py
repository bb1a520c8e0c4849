"""Read-rate caps: ``[targets.backup] max_rate`` and ``pgwarden backup --max-rate``.

:func:`parse_rate` reads a human size per second -- ``"40MB"`` (10^6), ``"40MiB"`` (2^20),
``"512 kB"``, ``"2G"``, or a bare integer of bytes -- into bytes per second; ``0`` (or
``"0"``, ``"off"``) is no cap.  A cap slows ``pg_dump`` down at its pipe, so it applies only
where pgwarden reads pg_dump's output (:func:`pgwarden.config.formats.streamed`;
:func:`cap_refusal` says why not elsewhere).
:func:`format_rate` writes a cap back for logs and summaries.  Pure: no I/O.
"""

from __future__ import annotations

import re

from pgwarden.config.formats import streamed
from pgwarden.config.model import BackupSettings
from pgwarden.config.reader import Reader

#: the smallest cap accepted: below it a cap is a typo (``40`` meant 40 MB, not 40 bytes)
MIN_RATE = 64 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:/\s*s)?\s*", re.IGNORECASE)


def parse_rate(value: int | str) -> int:
    """Bytes per second from ``value``; ``ValueError`` with a message naming what is wrong."""
    if isinstance(value, int):
        rate = value
    elif value.strip().lower() in ("off", "none", "unlimited"):
        return 0
    else:
        match = _SIZE.fullmatch(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(
                'must be a size per second such as "40MB", "40MiB" or "512kB", or 0 for no'
                f" cap (got {value!r})"
            )
        rate = int(float(match.group(1)) * _UNITS[unit])
    if rate < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    if 0 < rate < MIN_RATE:
        raise ValueError(
            f"must be at least 64KiB per second, or 0 for no cap (got {value!r} = {rate} bytes"
            '/s; write a unit: "40MB")'
        )
    return rate


def format_rate(rate: int) -> str:
    """``40 MB/s``, ``512 kB/s``; ``unlimited`` for 0."""
    if rate <= 0:
        return "unlimited"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if rate >= scale:
            return f"{rate / scale:.4g} {unit}/s"
    return f"{rate} B/s"


def cap_refusal(rate: int, format: str, compression: str) -> str | None:
    """Why a cap of ``rate`` cannot apply to such a backup, or ``None`` when it can."""
    if rate <= 0 or streamed(format, compression):
        return None
    return (
        f"a read-rate cap needs a dump pgwarden streams (format custom with compression auto or"
        f" zstd, or plain); format {format!r} with compression {compression!r} is written by"
        " pg_dump itself, so there is nothing to slow down: remove max_rate or change the format"
    )


def read_max_rate(b: Reader) -> int:
    """``max_rate`` of a ``[targets.backup]`` table (:func:`parse_rate`); 0 when absent."""
    value = b.opt_scalar("max_rate")
    if value is None:
        return 0
    try:
        return parse_rate(int(value) if isinstance(value, float) else value)
    except ValueError as exc:
        b.error("max_rate", str(exc))
        return 0


def check_cap(b: Reader, backup: BackupSettings) -> None:
    """Refuse a ``max_rate`` that cannot apply to the backup's format (:func:`cap_refusal`)."""
    if (why := cap_refusal(backup.max_rate, backup.format, backup.compression)) is not None:
        b.error("max_rate", why)
