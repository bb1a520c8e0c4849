"""The control socket's peer policy against real peers: the groups that count are the ones the
kernel reports for the connecting process (``SO_PEERGROUPS``), not the group database, and
members of the socket's own group are served by default (the unit's comments promise it)."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.config import DaemonConfig
from pgwarden.control.peers import PeerGroups, peer_of, refusal

CLIENT = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(1)"


@pytest.fixture
def group() -> Iterator[tuple[str, int]]:
    name = f"pgwp{os.getpid() % 100000}"
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=True)


def _peer_as_nobody(extra_groups: list[int]) -> PeerGroups:
    """Connect as nobody (primary group nogroup) with exactly these supplementary groups."""
    root = Path(tempfile.mkdtemp(prefix="pgwp", dir="/tmp"))
    root.chmod(0o755)
    listener = socket.socket(socket.AF_UNIX)
    try:
        path = root / "s"
        listener.bind(str(path))
        path.chmod(0o666)
        listener.listen(1)
        listener.settimeout(30)
        client = subprocess.Popen(
            ["/usr/bin/python3", "-c", CLIENT, str(path)],
            user="nobody",
            group="nogroup",
            extra_groups=extra_groups,
            cwd="/",
        )
        try:
            conn, _ = listener.accept()
            with conn:
                return peer_of(conn)
        finally:
            client.wait(timeout=30)
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)


def test_the_kernels_groups_count(group: tuple[str, int]) -> None:
    name, gid = group
    peer = _peer_as_nobody([gid])
    assert peer.user == "nobody"
    assert peer.groups == (gid,)
    assert refusal(peer, DaemonConfig(allowed_groups=(name,))) is None
    assert refusal(peer, DaemonConfig()) is not None


def test_the_group_database_alone_does_not(group: tuple[str, int]) -> None:
    """nobody is listed as a member, but this process of nobody's doesn't hold the group."""
    name, _ = group
    subprocess.run(["gpasswd", "-a", "nobody", name], check=True, capture_output=True)
    peer = _peer_as_nobody([])
    assert peer.groups == ()
    why = refusal(peer, DaemonConfig(allowed_groups=(name,)))
    assert why is not None and "allowed_groups" in why


def test_members_of_the_sockets_group_are_served_by_default(group: tuple[str, int]) -> None:
    name, gid = group
    peer = _peer_as_nobody([gid])
    assert refusal(peer, DaemonConfig(socket_group=name)) is None
    assert refusal(_peer_as_nobody([]), DaemonConfig(socket_group=name)) is not None
