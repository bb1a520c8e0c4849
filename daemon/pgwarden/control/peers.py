"""Who is connecting to the control socket, and whether they may use it.

:func:`peer_of` reads the peer's pid, uid and gid with ``SO_PEERCRED`` (the kernel's word,
not the client's).  :func:`refusal` applies the policy: root, the daemon's own uid, users in
``[daemon] allowed_users`` (names or numeric uids) and members of ``allowed_groups`` (primary
group, or supplementary from the group database via ``os.getgrouplist``) are served.  The
socket file's mode and group are a first gate; this is the second.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct

from pgwarden.config import DaemonConfig
from pgwarden.control.protocol import Peer

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_of(conn: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Peer(pid, uid, gid, user)


def refusal(peer: Peer, policy: DaemonConfig) -> str | None:
    """Why ``peer`` may not use the socket, or ``None`` when it may."""
    if peer.uid in (0, os.geteuid()):
        return None
    if peer.user in policy.allowed_users or str(peer.uid) in policy.allowed_users:
        return None
    gids = {peer.gid}
    if peer.user != str(peer.uid):
        with contextlib.suppress(KeyError, OSError):
            gids.update(os.getgrouplist(peer.user, peer.gid))
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
