"""The typed outcome of running an external tool, and turning a failure into an error.

:class:`ToolResult` is what :mod:`pgwarden.pg.process` returns for every tool run;
:func:`check` raises :class:`~pgwarden.errors.ToolError` (tool, message, return code, the
redacted stderr tail) unless it succeeded.  Both are re-exported by :mod:`pgwarden.pg.process`.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

from pgwarden.errors import ToolError

__all__ = ["ToolResult", "check"]


@dataclass(frozen=True)
class ToolResult:
    """How a tool ended.  ``returncode`` is negative when a signal killed it (``-9``)."""

    tool: str
    returncode: int
    stderr_tail: str
    duration_s: float
    cancelled: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled and not self.timed_out

    def describe(self) -> str:
        """A short human phrase: ``exited with status 1``, ``timed out after 3.0 s``..."""
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s"
        if self.cancelled:
            return "cancelled"
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"exited with status {self.returncode}"


def check(result: ToolResult, *, ok_codes: Sequence[int] = (0,)) -> ToolResult:
    """Return ``result`` if the tool succeeded, else raise :class:`ToolError` with its tail."""
    if result.returncode in ok_codes and not result.cancelled and not result.timed_out:
        return result
    raise ToolError(result.tool, result.describe(), result.returncode, result.stderr_tail)
