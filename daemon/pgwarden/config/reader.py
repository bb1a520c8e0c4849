"""Typed readers for decoded TOML tables that collect errors with their key paths.

:class:`Reader` walks one table; every accessor records the key as known, checks its type
and range, and on a problem appends ``"<path>: <message>"`` to the shared error list and
returns the default, so that one pass reports every mistake.  ``finish()`` reports keys that
were never asked for (unknown keys are errors: fail closed).  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg.conninfo

from pgwarden.config import cron as cronexpr
from pgwarden.config.names import target_name_problem
from pgwarden.redaction import Secret, redact

T = TypeVar("T")
_MISSING = object()


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


class Reader:
    """Reads one TOML table at ``path``; errors go to the shared ``errors`` list."""

    def __init__(
        self, data: Mapping[str, Any], prefix: str = "", errors: list[str] | None = None
    ) -> None:
        self.data = data
        self.prefix = prefix
        self.errors: list[str] = errors if errors is not None else []
        self._seen: set[str] = set()

    # -- plumbing --------------------------------------------------------------------------
    def key_path(self, key: str) -> str:
        bare = key.isascii() and key.replace("_", "").replace("-", "").isalnum()
        key = key if bare else repr(key)  # quoted as TOML would: ' ', 'a.b', '\u202e'
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.key_path(key)}: {message}")

    def _get(self, key: str) -> object:
        self._seen.add(key)
        return self.data.get(key, _MISSING)

    def mark(self, key: str) -> None:
        """Note ``key`` as known (read by the caller from :attr:`data`)."""
        self._seen.add(key)

    def finish(self) -> None:
        for key in sorted(set(self.data) - self._seen):
            self.error(key, "unknown key")

    def section(self, key: str) -> Reader:
        value = self._get(key)
        if value is _MISSING:
            return Reader({}, self.key_path(key), self.errors)
        if not isinstance(value, dict):
            self.error(key, f"must be a table (got {_kind(value)})")
            return Reader({}, self.key_path(key), self.errors)
        return Reader(value, self.key_path(key), self.errors)

    def table_array(self, key: str) -> Iterable[Reader]:
        value = self._get(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(key, f"must be an array of tables (got {_kind(value)})")
            return []
        return [Reader(v, f"{self.key_path(key)}[{i}]", self.errors) for i, v in enumerate(value)]

    def _typed(self, key: str, types: tuple[type, ...], what: str) -> object:
        value = self._get(key)
        if value is _MISSING:
            return _MISSING
        if isinstance(value, bool) and bool not in types:
            self.error(key, f"must be {what} (got a boolean)")
            return _MISSING
        if not isinstance(value, types):
            self.error(key, f"must be {what} (got {_kind(value)} {value!r})")
            return _MISSING
        return value

    def _range(self, key: str, value: T, minimum: float | None, maximum: float | None) -> bool:
        if minimum is not None and value < minimum:  # type: ignore[operator]
            self.error(key, f"must be >= {minimum} (got {value})")
            return False
        if maximum is not None and value > maximum:  # type: ignore[operator]
            self.error(key, f"must be <= {maximum} (got {value})")
            return False
        return True

    # -- scalars ---------------------------------------------------------------------------
    def flag(self, key: str, default: bool) -> bool:
        value = self._typed(key, (bool,), "true or false")
        return default if value is _MISSING else bool(value)

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._typed(key, (int,), "an integer")
        if value is _MISSING:
            return default
        assert isinstance(value, int)
        return value if self._range(key, value, minimum, maximum) else default

    def opt_int(
        self, key: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self._typed(key, (int,), "an integer")
        if value is _MISSING:
            return None
        assert isinstance(value, int)
        return value if self._range(key, value, minimum, maximum) else None

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._typed(key, (int, float), "a number")
        if value is _MISSING:
            return default
        assert isinstance(value, int | float)
        return float(value) if self._range(key, value, minimum, maximum) else default

    def opt_number(self, key: str, *, minimum: float | None = None) -> float | None:
        value = self._typed(key, (int, float), "a number")
        if value is _MISSING:
            return None
        assert isinstance(value, int | float)
        return float(value) if self._range(key, value, minimum, None) else None

    def opt_scalar(self, key: str) -> float | str | None:
        value = self._typed(key, (int, float, str), "a number or a string")
        if value is _MISSING:
            return None
        return value if isinstance(value, str) else float(value)  # type: ignore[arg-type]

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self._typed(key, (str,), "a string")
        if value is _MISSING:
            if required and key not in self.data:
                self.error(key, "is required")
            return default
        assert isinstance(value, str)
        if required and not value.strip():
            self.error(key, "must not be empty")
        return value

    def string_or_off(self, key: str, default: str | None) -> str | None:
        """A string, where ``""`` turns the setting off (``None``)."""
        if self.data.get(key) == "":
            self._seen.add(key)
            return None
        return self.string(key, default or "") if (key in self.data or default) else None

    def opt_str(self, key: str) -> str | None:
        value = self._typed(key, (str,), "a string")
        if value is _MISSING:
            return None
        assert isinstance(value, str)
        if not value:
            self.error(key, "must not be empty (leave the key out instead)")
            return None
        return value

    def secret(self, key: str) -> Secret | None:
        """An optional non-empty string that is a secret: no message repeats it."""
        value = self._get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.error(key, f"must be a string (got {_kind(value)}; the value is not repeated)")
            return None
        if not value:
            self.error(key, "must not be empty (leave the key out instead)")
            return None
        return Secret(value)

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self._typed(key, (list,), "an array of strings")
        if value is _MISSING:
            return ()
        assert isinstance(value, list)
        if not all(isinstance(v, str) for v in value):
            self.error(key, "must be an array of strings")
            return ()
        return tuple(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value

    def path(self, key: str, default: Path) -> Path:
        value = self.opt_path(key)
        return default if value is None else value

    def opt_path(self, key: str) -> Path | None:
        value = self.opt_str(key)
        if value is None:
            return None
        if not value.startswith("/"):
            self.error(key, f"must be an absolute path (got {value!r})")
            return None
        return Path(value)

    def octal_mode(self, key: str, default: int) -> int:
        value = self.opt_str(key)
        if value is None:
            return default
        try:
            mode = int(value, 8)
        except ValueError:
            self.error(key, f'must be an octal mode such as "0660" (got {value!r})')
            return default
        if not 0 <= mode <= 0o777:
            self.error(key, f"must be between 0000 and 0777 (got {value!r})")
            return default
        return mode

    def name(self, key: str) -> str | None:
        value = self.string(key, required=True)
        if not value:
            return None
        problem = target_name_problem(value)
        if problem is not None:
            self.error(key, problem)
            return None
        return value

    def timezone(self, key: str, default: str) -> str:
        value = self.string(key, default)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(key, f"unknown timezone {value!r}")
            return default
        return value

    def cron(self, key: str, default: str, tz: str) -> str:
        value = self.string(key, default)
        problem = cronexpr.problem(value, tz)
        if problem:
            self.error(key, problem)
            return default
        return value

    def opt_cron(self, key: str, default: str | None, tz: str) -> str | None:
        if key in self.data and self.data[key] in ("", "off", "none"):
            self._seen.add(key)
            return None
        if key not in self.data and default is None:
            return None
        return self.cron(key, default or "", tz)

    def listen_address(self, key: str, default: str) -> str:
        value = self.string(key, default)
        problem = listen_problem(value)
        if problem is not None:
            self.error(key, problem)
            return default
        return value

    def dsn(self, key: str, *, required: bool) -> str | None:
        value = self.string(key, required=required) if required else self.opt_str(key)
        if not value:
            return None
        try:
            params = psycopg.conninfo.conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            # the message of a bad DSN may echo the DSN, password included: keep it out.
            self.error(key, "not a valid libpq connection string or postgresql:// URI")
            return None
        if not params.get("dbname"):
            self.error(key, "must name a database (dbname= or /DBNAME in the URI)")
            return None
        return value

    def url_has_password(self, url: str) -> bool:
        """True if an SQLAlchemy URL carries a secret (user info, ``?password=``...): the
        rule of ``config show``, which prints it through :func:`~pgwarden.redaction.redact`."""
        return redact(url) != url

    def dsn_has_password(self, dsn: str) -> bool:
        try:
            return bool(psycopg.conninfo.conninfo_to_dict(dsn).get("password"))
        except psycopg.ProgrammingError:
            return False


SubReader = Reader


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def listen_problem(value: str) -> str | None:
    """Why ``value`` is not ``HOST:PORT`` (an IP literal, ``[v6]``, ``localhost`` or a host
    name, and a port 0-65535), or ``None`` when it is."""
    host, sep, port = value.rpartition(":")
    if host == "*":
        return (
            f"'*' is not an address: to listen on every interface write 0.0.0.0:{port or 9188}"
            " (or [::]:PORT) -- that exposes the metrics to every network that reaches this"
            " host; prefer 127.0.0.1 or a private address, with basic auth and TLS"
        )
    if not sep or not host or not (port.isascii() and port.isdigit()):
        return f"must be HOST:PORT such as 127.0.0.1:9188 or [::1]:9188 (got {value!r})"
    if len(port) > 5 or int(port) > 65535:
        return f"the port must be 0-65535 (got {port}; 0: any free port)"
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        if ":" in inner and _is_ip(inner):
            return None
        return f"brackets hold an IPv6 address only, such as [::1]:9188 (got {value!r})"
    if ":" in host:
        return f"write an IPv6 address in brackets, such as [::1]:9188 (got {value!r})"
    if _is_ip(host) or all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return None
    return f"the host must be an IP address, localhost or a host name (got {host!r})"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
