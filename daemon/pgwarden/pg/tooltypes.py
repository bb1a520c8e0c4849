"""The types at the boundary of the tool runner (:mod:`pgwarden.pg.process`).

:class:`ToolResult` is what every tool run returns; :func:`check` raises
:class:`~pgwarden.errors.ToolError` (tool, message, return code, the redacted stderr tail) unless
it succeeded.  The protocols describe what the runner accepts: a structlog-shaped logger (or a
stdlib one), binary sinks and sources.  All are re-exported by :mod:`pgwarden.pg.process`.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pgwarden.errors import ToolError

__all__ = [
    "AnyLogger",
    "Readable",
    "Sink",
    "ToolLogger",
    "ToolResult",
    "Writable",
    "check",
]


class ToolLogger(Protocol):
    """What a structlog logger offers (``log.info("event", key=value)``)."""

    def info(self, event: str, /, *args: Any, **kw: Any) -> Any: ...
    def warning(self, event: str, /, *args: Any, **kw: Any) -> Any: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


AnyLogger = ToolLogger | logging.Logger
#: where stdout goes: a binary file object (``BinaryIO``, ``BytesIO``...) or a chunk callback
Sink = Writable | Callable[[bytes], object]


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
