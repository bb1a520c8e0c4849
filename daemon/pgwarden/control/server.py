"""The control socket server: a Unix stream socket, one thread per connection.

Start-up claims the socket path safely: a lock file beside it (``<socket>.lock``, flock held
for the server's life; left in place, it is empty) makes a second daemon refuse to start, and
so does a live daemon answering on the path; a stale socket file (nobody listening) is
replaced; anything that is not a socket is never deleted.  The socket is bound under a
temporary name, given its mode and group, then renamed into place, so it is never reachable
with looser permissions.  ``stop()`` removes it (only if it is still ours).

Each connection's peer is checked at accept (:mod:`pgwarden.control.peers`, ``SO_PEERCRED``):
a refused peer gets one ``forbidden`` answer (id ``null``) and is closed at once, holding no
slot and no thread.  The allow lists are read from the config in force, so a reload changes
them.  At most :data:`MAX_CONNECTIONS` connections are served at once (more get ``busy``); a
client has :data:`~pgwarden.control.protocol.READ_TIMEOUT` seconds for each whole request,
counted from connecting or from the previous answer (blank lines do not extend it), so a
silent or trickling one only holds its own thread, briefly.  A handler that raises answers
``internal``; nothing a client sends can stop the accept loop.  The accept loop thread is
``.thread`` (named ``control``); if it dies the daemon treats it as fatal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pgwarden import logsetup
from pgwarden.config import DaemonConfig
from pgwarden.control import protocol
from pgwarden.control.api import DaemonApi
from pgwarden.control.calls import Call, Handler
from pgwarden.control.commands import COMMANDS
from pgwarden.control.peers import peer_of, refusal
from pgwarden.control.protocol import Args, Peer
from pgwarden.errors import ControlError, PgwardenError, describe_unexpected
from pgwarden.redaction import redact

log = logsetup.get_logger("pgwarden.control")

MAX_CONNECTIONS = 64
SEND_TIMEOUT = 10.0  # a client that does not read its answers is dropped after this
TICK = 1.0  # the accept loop wakes at least this often (stop flag)
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
READ_ONLY_COMMANDS = frozenset({"hello", "status", "jobs", "job", "backups", "config"})


class _ClientGoneError(Exception):
    pass


class ControlServer:
    def __init__(
        self,
        api: DaemonApi,
        daemon_config: DaemonConfig,
        *,
        commands: Mapping[str, Handler] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = protocol.READ_TIMEOUT,
    ) -> None:
        self._api = api
        self._config = daemon_config
        self.path = Path(daemon_config.socket)
        self._commands = dict(commands if commands is not None else COMMANDS)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._read_timeout = read_timeout
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # wakes the loop
        self._stopping = threading.Event()
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._count = 0
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    # -- start and stop --------------------------------------------------------------------
    def claim(self) -> None:
        """Take the socket path (lock, live-daemon check, stale file removed), bind nothing.

        A daemon calls this before touching shared state (crash recovery), so that a second
        daemon on the same socket refuses before it can disturb the first one's jobs.
        ``start()`` claims by itself when this was not called.
        """
        if self._lock_fd is not None:
            return
        if len(os.fsencode(self.path)) > UNIX_PATH_MAX - 16:
            raise PgwardenError(f"control socket path {self.path} is too long for a Unix socket")
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._lock()
            self._clear_stale()
        except BaseException:
            self._release_lock()
            raise

    def start(self) -> None:
        """Claim the socket path, bind and listen, start the accept thread."""
        self.claim()
        try:
            self._listener = self._bind()
            self._wake = socket.socketpair()
        except BaseException:
            self._close_listener()
            self._release_lock()
            raise
        self.thread.start()
        log.info("control socket listening", socket=str(self.path))

    def _lock(self) -> None:
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise PgwardenError(f"cannot create {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PgwardenError(
                f"another pgwarden daemon is running: it holds {lock_path} (socket {self.path});"
                " refusing to start a second one"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clear_stale(self) -> None:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise PgwardenError(f"{self.path} exists and is not a socket; refusing to replace it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            try:
                probe.connect(str(self.path))
            except ConnectionRefusedError:
                self.path.unlink(missing_ok=True)
                log.warning("replaced a stale control socket", socket=str(self.path))
                return
            except FileNotFoundError:
                return
            except TimeoutError:
                pass  # someone is listening but its backlog is full: alive
        raise PgwardenError(
            f"another pgwarden daemon answers on {self.path}; refusing to start a second one"
        )

    def _bind(self) -> socket.socket:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the mode on the socket's inode before bind is what bind gives the file (less the
            # umask), so it is never wider than socket_mode, even for an instant; the chmod
            # after bind then sets exactly socket_mode whatever the umask took away
            os.fchmod(listener.fileno(), self._config.socket_mode)
            listener.bind(str(tmp))
            os.chmod(tmp, self._config.socket_mode)
            if self._config.socket_group:
                try:
                    gid = grp.getgrnam(self._config.socket_group).gr_gid
                except KeyError:
                    raise PgwardenError(
                        f"daemon.socket_group: no group {self._config.socket_group!r}"
                    ) from None
                os.chown(tmp, -1, gid)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
            os.rename(tmp, self.path)
            info = self.path.stat()
            self._identity = (info.st_dev, info.st_ino)
        except OSError as exc:
            listener.close()
            tmp.unlink(missing_ok=True)
            raise PgwardenError(f"cannot create the control socket {self.path}: {exc}") from exc
        except BaseException:
            listener.close()
            tmp.unlink(missing_ok=True)
            raise
        return listener

    def stop(self) -> None:
        """Stop accepting, drop open connections, remove the socket file."""
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self.thread.is_alive():
            self.thread.join(timeout=5.0)
        with self._active_lock:
            for conn in self._active:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._close_listener()
        self._release_lock()
        if self._wake is not None:
            for end in self._wake:
                end.close()
            self._wake = None

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                info = self.path.stat()
                if (info.st_dev, info.st_ino) == self._identity:
                    self.path.unlink()

    # -- the accept loop -------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None
        assert self._wake is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = sel.select(TICK)
                if any(key.fileobj is self._listener for key, _ in ready):
                    self._accept()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (
                errno.EMFILE,
                errno.ENFILE,
                errno.ENOBUFS,
                errno.ENOMEM,
                errno.ECONNABORTED,
            ):
                log.warning("control socket cannot accept", error=exc.strerror)
                time.sleep(0.1)
                return
            raise
        peer = self._admit(conn)
        if peer is None:
            return
        conn.setblocking(True)
        if not self._slots.acquire(blocking=False):
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1.0)
                conn.sendall(
                    protocol.error(
                        None,
                        protocol.BUSY,
                        f"too many control connections (limit {MAX_CONNECTIONS})",
                    )
                )
            return
        self._count += 1
        thread = threading.Thread(
            target=self._connection, args=(conn, peer), name=f"control-{self._count}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            self._slots.release()
            conn.close()
            log.warning("control socket cannot start a connection thread")

    def _admit(self, conn: socket.socket) -> Peer | None:
        """The peer if it may use the socket; a refused one is answered and closed here."""
        try:
            peer = peer_of(conn)
            refused = refusal(peer, self._policy())
        except Exception:  # the accept loop must live on
            log.exception("control socket cannot identify a peer")
            conn.close()
            return None
        if refused is None:
            return peer
        log.warning("control connection refused", uid=peer.uid, user=peer.user, pid=peer.pid)
        with conn, contextlib.suppress(OSError):  # non-blocking: the answer fits the buffer
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.recv(protocol.MAX_LINE)  # unread bytes would turn the close into a reset
            conn.send(protocol.error(None, protocol.FORBIDDEN, refused))
        return None

    # -- one connection --------------------------------------------------------------------
    def _policy(self) -> DaemonConfig:
        """The peer policy of the config in force (a reload changes the allow lists)."""
        try:
            return self._api.config().config.daemon
        except PgwardenError:  # the service is not attached yet: the start-up config
            return self._config

    def _connection(self, conn: socket.socket, peer: Peer) -> None:
        with self._active_lock:
            self._active.add(conn)
        try:
            with conn:
                self._converse(conn, peer)
        except (OSError, _ClientGoneError):
            pass  # the client went away: nothing to answer
        except Exception:  # request boundary: log it, never kill the server
            log.exception("control connection failed")
        finally:
            with self._active_lock:
                self._active.discard(conn)
            self._slots.release()

    def _converse(self, conn: socket.socket, peer: Peer) -> None:
        reader = protocol.LineReader(conn, protocol.MAX_LINE)
        deadline = time.monotonic() + self._read_timeout  # one per request, blank lines included
        while not self._stopping.is_set():
            try:
                line = reader.readline(deadline - time.monotonic())
            except protocol.TooLargeError:
                self._send(
                    conn,
                    protocol.error(
                        None,
                        protocol.TOO_LARGE,
                        f"request line longer than {protocol.MAX_LINE} bytes",
                    ),
                )
                return
            except TimeoutError:
                self._send(
                    conn,
                    protocol.error(
                        None,
                        protocol.TIMEOUT,
                        f"no complete request within {self._read_timeout:g} s",
                    ),
                )
                return
            if line is None:
                return
            if not line.strip():
                continue
            self._send(conn, self._answer(conn, peer, line))
            deadline = time.monotonic() + self._read_timeout

    def _answer(self, conn: socket.socket, peer: Peer, line: bytes) -> bytes:
        request_id: protocol.RequestId = None
        try:
            request = protocol.parse_request(line)
            request_id = request.id
            handler = self._handler(request.cmd)
            if request.cmd not in READ_ONLY_COMMANDS:
                log.info("control command", cmd=request.cmd, user=peer.user, pid=peer.pid)

            def emit(name: str, data: dict[str, object]) -> None:
                try:
                    self._send(conn, protocol.event(request_id, name, data))
                except OSError as exc:
                    raise _ClientGoneError from exc

            call = Call(self._api, Args(request.cmd, request.args), emit, peer)
            return protocol.ok(request_id, handler(call))
        except _ClientGoneError:
            raise
        except ControlError as exc:
            return protocol.error(request_id, exc.code, str(exc))
        except PgwardenError as exc:
            return protocol.error(request_id, exc.code, redact(str(exc)))
        except Exception as exc:  # request boundary: an answer, never a crash
            log.exception("control command failed", user=peer.user)
            text = describe_unexpected(exc)
            return protocol.error(request_id, protocol.INTERNAL, f"internal error: {text}")

    def _handler(self, cmd: str) -> Handler:
        handler = self._commands.get(cmd)
        if handler is None:
            known = ", ".join(sorted(self._commands))
            raise protocol.control_error(
                protocol.UNKNOWN_COMMAND, f"unknown command {cmd!r} (known: {known})"
            )
        return handler

    @staticmethod
    def _send(conn: socket.socket, data: bytes) -> None:
        conn.settimeout(SEND_TIMEOUT)
        conn.sendall(data)
