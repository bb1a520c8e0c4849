"""CPU and I/O priority of a backup run: the low priority that keeps production responsive.

``[targets.backup] priority`` is ``auto`` (low for scheduled and catch-up runs, normal for a
run an operator starts: ``pgwarden backup``, ``ctl backup``, a pre-migration backup), ``low`` or
``normal``; :func:`resolve` turns it into a :class:`Priority`.

Low priority is, on Linux:

* CPU: nice :data:`LOW_NICE` (10): under contention a nice-10 thread gets about a tenth of
  the CPU a nice-0 thread gets (kernel weights 110 against 1024), and all of an idle CPU;
* I/O: class best-effort, level :data:`LOW_IO_LEVEL` (7, the lowest of that class).  Not the
  idle class: an idle-class task gets the disk only when nobody else has used it for a while,
  so on a database server that is never quiet a backup could wait for ever while it holds its
  exported snapshot open (vacuum held back, ``stall_timeout`` firing).  The I/O class is
  honoured by the BFQ scheduler (and, class only, mq-deadline); with ``none`` (most NVMe and
  virtio disks) it changes nothing, and buffered writes are flushed later by the kernel at its
  own priority.

Both are per thread on Linux, and every thread and process a thread starts inherits them.  But
a nice value only ranks tasks *within their autogroup* (``kernel.sched_autogroup_enabled``, on by
default on Debian and Ubuntu, where no cgroup CPU controller is in use): every session is one
group, and the groups share the CPU equally.  Every tool starts in a new session
(:mod:`pgwarden.pg.process`), hence an autogroup of its own, where nice 10 alone would change
nothing against the server's group; :func:`carry_to_session` gives that new autogroup the
starting thread's nice (measured: a nice-10 tool in its own session took 50 % of a contended
CPU, with its autogroup at nice 10 12 %).  pgwarden's own stage threads share the daemon's
autogroup (or, with systemd's CPU controller, its cgroup), so against the server they compete
as the daemon; ``CPUWeight=`` in a drop-in lowers the whole daemon where that matters.  An
unprivileged process cannot raise its nice again, so :func:`run_at` never lowers a thread that
has other work to do: the run goes to a *fresh* thread that lowers itself first and ends with
the run.  What it starts -- ``pg_dump``/``pg_dumpall`` (through :mod:`pgwarden.pg.process`),
the compression, writing, hashing and read-back threads, the facts queries' client side --
runs low; the daemon's job workers, scheduler, metrics and control threads keep theirs.  The
server backend that serves ``pg_dump`` belongs to the ``postgres`` user and cannot be reniced
from here; it slows down with a slower reader.  Elsewhere than Linux (or if the kernel refuses)
the run goes ahead at normal priority and says so in its log line.
"""

from __future__ import annotations

import ctypes
import enum
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pgwarden.logsetup import get_logger

log = get_logger("pgwarden.priority")

T = TypeVar("T")

LOW_NICE = 10
IOPRIO_CLASS_BE = 2
LOW_IO_LEVEL = 7
_IOPRIO_WHO_PROCESS = 1  # with a thread id: that thread (0: the calling one)
_IOPRIO_CLASS_SHIFT = 13
#: ioprio_set / ioprio_get syscall numbers (glibc has no wrapper)
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "armv7l": (314, 315), "i686": (289, 290)}
_IO_CLASSES = {0: "none", 1: "realtime", 2: "best-effort", 3: "idle"}
_AUTOGROUP_TRIES = 5


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"


def resolve(setting: str, *, scheduled: bool) -> Priority:
    """``auto`` -> low for a scheduled (or catch-up) run, normal for one an operator started."""
    if setting == "auto":
        return Priority.LOW if scheduled else Priority.NORMAL
    return Priority(setting)


@dataclass(frozen=True)
class ThreadPriority:
    """A thread's CPU nice and I/O priority, as the kernel reports them."""

    nice: int
    io_class: str  # none | realtime | best-effort | idle
    io_level: int

    def __str__(self) -> str:
        return f"nice {self.nice}, io {self.io_class}/{self.io_level}"


def _libc_syscall() -> Callable[..., int] | None:
    if _NUMBERS is None or not hasattr(os, "setpriority"):
        return None
    try:
        syscall: Callable[..., int] = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    return syscall


_NUMBERS = _SYSCALLS.get(platform.machine())
_SYSCALL = _libc_syscall()


def set_io_priority(io_class: int, level: int, tid: int = 0) -> None:
    """``ioprio_set`` for thread ``tid`` (0: the calling thread); ``OSError`` if refused."""
    if _SYSCALL is None or _NUMBERS is None:
        raise OSError(f"ioprio_set is not available on {platform.system()} {platform.machine()}")
    value = (io_class << _IOPRIO_CLASS_SHIFT) | level
    if _SYSCALL(_NUMBERS[0], _IOPRIO_WHO_PROCESS, tid, value) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"ioprio_set: {os.strerror(errno)}")


def thread_priority(tid: int | None = None) -> ThreadPriority:
    """The nice and I/O priority of thread ``tid`` (default: the calling thread)."""
    tid = threading.get_native_id() if tid is None else tid
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    if _SYSCALL is None or _NUMBERS is None:
        return ThreadPriority(nice, "none", 0)
    value = _SYSCALL(_NUMBERS[1], _IOPRIO_WHO_PROCESS, tid)
    if value < 0:
        return ThreadPriority(nice, "none", 0)
    return ThreadPriority(nice, _IO_CLASSES.get(value >> _IOPRIO_CLASS_SHIFT, "?"), value & 0xFF)


def carry_to_session(pid: int) -> None:
    """Give the autogroup of ``pid`` -- a tool just started in a session of its own by a
    lowered thread -- that thread's nice (module docstring).  A nice-0 thread does nothing.
    Best effort: no autogroups (the file is absent), or refused, the tool runs as it is."""
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if nice <= 0:
        return
    for _ in range(_AUTOGROUP_TRIES):
        try:
            with open(f"/proc/{pid}/autogroup", "w") as autogroup:
                autogroup.write(str(nice))
        except BlockingIOError:  # unprivileged: one change per 100 ms, machine-wide
            time.sleep(0.11)
        except OSError:  # no autogroup support, or the tool is gone already
            return
        else:
            return


def lower_this_thread() -> ThreadPriority:
    """Lower the calling thread (for ever): nice :data:`LOW_NICE`, I/O best-effort level 7.
    Never raises; what the kernel refused is logged and the thread's priority returned."""
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < LOW_NICE:  # never *raise* a nicer thread (and unprivileged, cannot)
            os.setpriority(os.PRIO_PROCESS, tid, LOW_NICE)
    except (OSError, AttributeError) as exc:
        log.warning("cannot lower the CPU priority", error=str(exc))
    try:
        set_io_priority(IOPRIO_CLASS_BE, LOW_IO_LEVEL)
    except OSError as exc:
        log.warning("cannot lower the I/O priority", error=str(exc))
    return thread_priority(tid)


def run_at(
    priority: Priority,
    work: Callable[[], T],
    *,
    cancel: threading.Event | None = None,
    name: str = "low-priority",
) -> T:
    """``work()`` at ``priority``: normal runs it here; low runs it on a fresh thread that
    lowers itself first (and everything it starts), waits for it and returns its result or
    raises its exception.  Interrupted while waiting (Ctrl-C), it sets ``cancel`` and waits for
    the work to stop before re-raising."""
    if priority is Priority.NORMAL:
        return work()
    box: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        lowered = lower_this_thread()
        log.info("running at low priority", thread=name, priority=str(lowered))
        try:
            box.append(work())
        except BaseException as exc:  # noqa: BLE001 - thread boundary; re-raised by the caller
            failure.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:
        if cancel is not None:
            cancel.set()
        thread.join()
        raise
    if failure:
        raise failure[0]
    return box[0]
