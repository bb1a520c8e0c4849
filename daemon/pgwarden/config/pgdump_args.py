"""The ``extra_args`` guard: read pg_dump's argv the way its ``getopt_long`` does.

pgwarden sets the output, format, compression, connection and snapshot itself
(:data:`~pgwarden.config.model.RESERVED_PG_DUMP_OPTIONS`); ``extra_args`` must not override
them.  Comparing whole words is not enough: glibc's ``getopt_long`` accepts any prefix of a
long option (``--form=p`` is ``--format=p``, ``--dbn=x`` is ``--dbname=x``), short options
cluster (``-vFp`` is ``-v -F p``), an option's value may be the next argument, and a bare word
is the database name, which replaces ``--dbname``.  :func:`refusal` walks the arguments with
pg_dump's own option table (pg_dump 18, a superset of the older ones) and returns why the first
offending argument is refused, or None.  A prefix that could stand for a reserved option is
refused even when pg_dump would call it ambiguous; unknown options are left to pg_dump.
"""

from __future__ import annotations

from pgwarden.config.model import RESERVED_PG_DUMP_OPTIONS

#: pg_dump's short options; a letter followed by ``:`` takes a value.
_SHORT_OPTSTRING = "abBcCd:e:E:f:F:h:j:n:N:Op:RsS:t:T:U:vwWxXZ:"

#: pg_dump's long options (18, with the undocumented aliases) that take a value.
_LONG_WITH_VALUE = frozenset(
    [
        "compress",
        "dbname",
        "encoding",
        "exclude-extension",
        "exclude-schema",
        "exclude-table",
        "exclude-table-and-children",
        "exclude-table-data",
        "exclude-table-data-and-children",
        "extension",
        "extra-float-digits",
        "file",
        "filter",
        "format",
        "host",
        "include-foreign-data",
        "jobs",
        "lock-wait-timeout",
        "port",
        "restrict-key",
        "role",
        "rows-per-insert",
        "schema",
        "section",
        "snapshot",
        "superuser",
        "sync-method",
        "table",
        "table-and-children",
        "username",
    ]
)
#: ... and those that take none.
_LONG_FLAGS = frozenset(
    [
        "attribute-inserts",
        "binary-upgrade",
        "blobs",
        "clean",
        "column-inserts",
        "create",
        "data-only",
        "disable-dollar-quoting",
        "disable-triggers",
        "enable-row-security",
        "help",
        "if-exists",
        "inserts",
        "large-objects",
        "load-via-partition-root",
        "no-acl",
        "no-blobs",
        "no-comments",
        "no-data",
        "no-large-objects",
        "no-owner",
        "no-password",
        "no-policies",
        "no-privileges",
        "no-publications",
        "no-reconnect",
        "no-schema",
        "no-security-labels",
        "no-statistics",
        "no-subscriptions",
        "no-sync",
        "no-table-access-method",
        "no-tablespaces",
        "no-toast-compression",
        "no-unlogged-table-data",
        "on-conflict-do-nothing",
        "password",
        "quote-all-identifiers",
        "schema-only",
        "sequence-data",
        "serializable-deferrable",
        "statistics",
        "statistics-only",
        "strict-names",
        "use-set-session-authorization",
        "verbose",
        "version",
    ]
)
_LONG_OPTIONS = _LONG_WITH_VALUE | _LONG_FLAGS
_RESERVED_LONG = frozenset(o[2:] for o in RESERVED_PG_DUMP_OPTIONS if o.startswith("--"))
_RESERVED_SHORT = frozenset(o[1] for o in RESERVED_PG_DUMP_OPTIONS if len(o) == 2)


def _short_takes_value(letter: str) -> bool:
    at = _SHORT_OPTSTRING.find(letter)
    return at >= 0 and _SHORT_OPTSTRING[at + 1 : at + 2] == ":"


def _long(arg: str) -> tuple[str | None, bool]:
    """(why ``--name[=value]`` is refused or None, whether it consumes the next argument)."""
    name, equals, _ = arg[2:].partition("=")
    matches = {name} if name in _LONG_OPTIONS else {o for o in _LONG_OPTIONS if o.startswith(name)}
    reserved = sorted(matches & _RESERVED_LONG)
    if reserved:
        spelled = ", ".join(f"--{o}" for o in reserved)
        return (
            f"{arg!r} would override {spelled} (getopt takes any prefix), which pgwarden sets",
            False,
        )
    takes_value = len(matches) == 1 and next(iter(matches)) in _LONG_WITH_VALUE
    return None, takes_value and not equals


def _short(arg: str) -> tuple[str | None, bool]:
    """(why the cluster ``-abc`` is refused or None, whether it consumes the next argument)."""
    for at, letter in enumerate(arg[1:], start=1):
        if letter in _RESERVED_SHORT:
            return f"{arg!r} would override -{letter}, which pgwarden sets", False
        if _short_takes_value(letter):
            return None, at == len(arg) - 1  # the rest of the cluster is the value
    return None, False


def refusal(extra_args: tuple[str, ...]) -> str | None:
    """Why these pg_dump arguments would override pgwarden's own, or None when they don't."""
    expect_value = False
    for arg in extra_args:
        if expect_value:
            expect_value = False
            continue
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return (
                f"{arg!r} would override the database: pg_dump takes a bare word (or what "
                "follows --) as the database name"
            )
        why, expect_value = _long(arg) if arg.startswith("--") else _short(arg)
        if why is not None:
            return why
    if expect_value:
        return f"{extra_args[-1]!r} needs a value (pg_dump would fail)"
    return None
