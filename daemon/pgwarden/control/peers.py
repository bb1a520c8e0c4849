"""Who is connecting to the control socket, and whether they may use it.

:func:`peer_of` reads the peer's pid, uid and gid with ``SO_PEERCRED`` and its supplementary
groups with ``SO_PEERGROUPS`` (Linux 4.13+): the kernel's word about the connecting process,
not the client's, nor the group database (a user added to a group counts once they log in
again, one removed stops counting at once).  :func:`refusal` applies the policy: root, the
daemon's own uid, users in ``[daemon] allowed_users`` (names or numeric uids), members of the
socket's own group (``socket_group``, else the daemon's group: ``pgwarden`` under the unit, as
its comments say) and members of ``allowed_groups`` are served.  The socket file's mode and
group are a first gate; this is the second.  A peer in more than 256 groups has only its
primary group counted (the socket module reads at most 1 KiB).
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

from pgwarden.config import DaemonConfig
from pgwarden.control.protocol import Peer

_UCRED = struct.Struct("3i")  # pid, uid, gid
#: <asm-generic/socket.h>; Python's socket module does not always name it
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_GROUPS_BUFLEN = 1024  # the most socket.getsockopt reads: 256 gid_t


@dataclass(frozen=True)
class PeerGroups(Peer):
    """A :class:`Peer` with the supplementary groups the kernel reported for it."""

    groups: tuple[int, ...] = ()


def peer_groups(conn: socket.socket) -> tuple[int, ...]:
    """The peer's supplementary gids (``SO_PEERGROUPS``), empty when the kernel can't say."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_BUFLEN)
    except OSError:  # ERANGE: more than 256 groups; ENOPROTOOPT: a kernel before 4.13
        return ()
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def peer_of(conn: socket.socket) -> PeerGroups:
    pid, uid, gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return PeerGroups(pid, uid, gid, user, peer_groups(conn))


def refusal(peer: Peer, policy: DaemonConfig) -> str | None:
    """Why ``peer`` may not use the socket, or ``None`` when it may."""
    if peer.uid in (0, os.geteuid()):
        return None
    if peer.user in policy.allowed_users or str(peer.uid) in policy.allowed_users:
        return None
    gids = {peer.gid, *(peer.groups if isinstance(peer, PeerGroups) else ())}
    if _socket_gid(policy) in gids:
        return None
    for name in policy.allowed_groups:
        try:
            if grp.getgrnam(name).gr_gid in gids:
                return None
        except KeyError:
            continue
    return (
        f"user {peer.user} (uid {peer.uid}) may not use the pgwarden control socket: "
        "add it to [daemon] allowed_users, or one of its groups to allowed_groups"
    )


def _socket_gid(policy: DaemonConfig) -> int | None:
    """The socket file's group: ``socket_group``, else the daemon's own."""
    if not policy.socket_group:
        return os.getegid()
    try:
        return grp.getgrnam(policy.socket_group).gr_gid
    except KeyError:
        return None
