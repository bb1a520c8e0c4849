"""Tools end with the daemon: every tool is started with a parent-death signal.

A tool that writes nothing -- ``pg_dump`` waiting on a table lock, ``pg_restore`` reading a
spooled file -- never meets the broken pipe a dead daemon leaves, so it would outlive a daemon
killed with SIGKILL (the OOM killer, a crash) for as long as it waits, holding its snapshot,
its locks and a connection.  :func:`parent_death_argv` prefixes the tool's argv with
util-linux's ``setpriv --pdeathsig TERM --``: the kernel sends SIGTERM to the tool when the
thread that started it ends (a job thread, which waits for its tools: in practice, when the
daemon dies), and ``setpriv`` then execs the tool with its argv and environment unchanged.
``pg_dump`` and ``pg_restore`` answer SIGTERM by cancelling their queries and exiting.

Without ``setpriv`` (not Linux, a minimal image) tools start as they are.  A tool that cannot
be found is started without it too, so that it fails exactly as it would alone (``OSError``
at start, not an exit status from ``setpriv``).
"""

from __future__ import annotations

import shutil

SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")


def parent_death_argv(args: list[str]) -> list[str]:
    """``args`` started so that the tool gets SIGTERM when the daemon dies."""
    if SETPRIV is None or shutil.which(args[0]) is None:
        return args
    return [SETPRIV, "--pdeathsig", "TERM", "--", *args]
