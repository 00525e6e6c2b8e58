"""Socket audit for the tests: which processes listen or talk outside the loopback network.

On a single machine the CPU smoke mode must keep every socket on 127.0.0.0/8 (or ``::1``).
`non_loopback_sockets` lists the inet sockets (TCP and UDP, listening, connected or bound) of
the given processes whose local or remote address is not loopback; a wildcard listener
(``0.0.0.0`` or ``::``) counts as NOT loopback, an IPv4-mapped ``::ffff:127.x.y.z`` counts as
loopback. One exception: a UDP socket to port 53 of a nameserver in /etc/resolv.conf is libc's
resolver, not a socket of the run (torch's C++ TCPStore code asks it for the name of
``::ffff:127.0.0.1`` on each connection, for its log lines; /etc/hosts names only the IPv4 form).
`session_pids` gives the processes of one session (``os.getsid``), so a run started under
``setsid`` can be audited without touching anybody else's processes.

Sampling misses short-lived sockets (a cloud-metadata probe lasts a second). `audit_env` adds
netaudit/sitecustomize.py to a run's Python processes: it records every non-loopback connect,
sendto, UDP bind, listen and host-name lookup made from Python, with its stack
(`audit_findings`), and which processes it covered (`audited_commands`); a name lookup of any
host but loopback's or this machine's is reported there, the resolver exception included.
tests/conftest.py turns it on for every process of the test session.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

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


def nameservers(path: str = "/etc/resolv.conf") -> set[str]:
    """The nameserver addresses libc's resolver asks."""
    try:
        with open(path, encoding="utf-8") as fh:
            return {f[1] for f in (line.split() for line in fh) if len(f) > 1 and
                    f[0] == "nameserver"}
    except OSError:
        return set()


def non_loopback_sockets(pids: Iterable[int]) -> list[str]:
    """Inet sockets of `pids` with a local or remote address outside loopback, one line each.

    Each line reads ``pid=<pid> name=<name> tcp|udp laddr=<ip:port> raddr=<ip:port|-> <status>``.
    Processes that are gone or cannot be inspected are skipped.
    """
    found: list[str] = []
    resolvers = nameservers()
    for pid in sorted(set(pids)):
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            conns = _connections(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for conn in conns:
            if (conn.type == socket.SOCK_DGRAM and conn.raddr and conn.raddr[1] == 53
                    and conn.raddr[0] in resolvers):
                continue  # libc's resolver (see the module docstring)
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


NETAUDIT = Path(__file__).resolve().parent / "netaudit"
AUDIT_ENV = "BAI_TEST_NETAUDIT"  # the folder a process records into (netaudit/sitecustomize.py)
AUDIT_ROOT_ENV = "BAI_TEST_NETAUDIT_ROOT"  # the test session's folder (tests/conftest.py)


def audit_folder(name: str) -> Path:
    """A new folder under the session's audit root: what is recorded there is also reported,
    and fails `make test`, at the end of the session."""
    root = Path(os.environ[AUDIT_ROOT_ENV])
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


def audit_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with the Python network audit on, recording into `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(NETAUDIT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, AUDIT_ENV: str(folder)}


def audit_findings(folder: Path) -> list[str]:
    """What the audit recorded in `folder` and below: one entry per non-loopback event, with
    its stack."""
    found: list[str] = []
    for path in sorted(folder.rglob("found-*.txt")):
        found += [e.strip() for e in path.read_text(errors="replace").split("\n\n") if e.strip()]
    return found


def audited_commands(folder: Path) -> list[str]:
    """The command lines of the Python processes the audit covered in `folder`."""
    return [p.read_text(errors="replace").strip() for p in sorted(folder.glob("seen-*.txt"))]
