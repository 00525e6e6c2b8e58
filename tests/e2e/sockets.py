"""Socket audit for end-to-end runs: which processes listen or talk outside the loopback network.

On a single machine the CPU smoke mode must keep every socket on 127.0.0.0/8 (or ``::1``).
`non_loopback_sockets` lists the inet sockets (TCP and UDP, listening, connected or bound) of
the given processes whose local or remote address is not loopback; a wildcard listener
(``0.0.0.0`` or ``::``) counts as NOT loopback, an IPv4-mapped ``::ffff:127.x.y.z`` counts as
loopback. `session_pids` gives the processes of one session (``os.getsid``), so a run started
under ``setsid`` can be audited without touching anybody else's processes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

import psutil


def is_loopback(ip: str) -> bool:
    """True for an address in 127.0.0.0/8, ``::1`` or ``::ffff:127.x.y.z``; False otherwise."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _fmt(addr: tuple | None) -> str:
    if not addr:
        return "-"
    ip, port = addr[0], addr[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _connections(proc: psutil.Process) -> list:
    if hasattr(proc, "net_connections"):
        return proc.net_connections(kind="inet")
    return proc.connections(kind="inet")  # psutil < 6


def non_loopback_sockets(pids: Iterable[int]) -> list[str]:
    """Inet sockets of `pids` with a local or remote address outside loopback, one line each.

    Each line reads ``pid=<pid> name=<name> tcp|udp laddr=<ip:port> raddr=<ip:port|-> <status>``.
    Processes that are gone or cannot be inspected are skipped.
    """
    found: list[str] = []
    for pid in sorted(set(pids)):
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            conns = _connections(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for conn in conns:
            bad = bool(conn.laddr) and not is_loopback(conn.laddr[0])
            bad = bad or (bool(conn.raddr) and not is_loopback(conn.raddr[0]))
            if not bad:
                continue
            proto = "udp" if conn.type == socket.SOCK_DGRAM else "tcp"
            status = conn.status if conn.status != psutil.CONN_NONE else "-"
            found.append(
                f"pid={pid} name={name} {proto} laddr={_fmt(conn.laddr)} "
                f"raddr={_fmt(conn.raddr)} {status}"
            )
    return found


def session_pids(sid: int) -> list[int]:
    """All live pids whose session id (``os.getsid``) is `sid`."""
    pids: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                pids.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return pids
