"""Test-only network audit, loaded by every Python process of the test session (PYTHONPATH).

With BAI_TEST_NETAUDIT=DIR set, a `sys.addaudithook` hook records every socket `connect` and
`sendto` whose address is not loopback, every name lookup of a host that is neither loopback
nor this machine, every UDP `bind` and every TCP `listen` on an address that is not loopback
(the wildcard included), with the stack that made it, in DIR/found-<pid>.txt. A TCP bind alone
is not recorded: binding ("", 0) and closing is how OpenRLHF and vLLM find a free port, and
such a socket never accepts anything. Each audited process leaves DIR/seen-<pid>.txt with its
command line, so a test can tell which processes were covered. It only records: the run
behaves as without it.
The 1-second socket sampling in sockets.py still covers what is not Python (Ray's C++ servers).
Standalone on purpose (stdlib only, nothing of tests/ importable here): `_loopback` mirrors
sockets.is_loopback, adding host names.
"""

from __future__ import annotations

import _socket
import ipaddress
import os
import socket
import sys
import traceback

_DIR = os.environ.get("BAI_TEST_NETAUDIT")
# loopback's names, and this machine's own name (Ray looks it up; /etc/hosts answers)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
                   socket.gethostname().lower()}
_CHECKED = {"socket.connect": 1, "socket.bind": 1, "socket.sendto": 1,
            "socket.getaddrinfo": 0, "socket.gethostbyname": 0, "socket.gethostbyname_ex": 0,
            "socket.gethostbyaddr": 0, "socket.getnameinfo": 0}


def _loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True  # AF_UNIX paths, netlink pids: not internet addresses
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name that is not loopback's, or "" (the wildcard)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _host(event: str, args: tuple) -> object:
    """The host an event names; None for a socket that is not AF_INET / AF_INET6."""
    if _CHECKED[event]:  # (socket, address)
        if getattr(args[0], "family", None) not in (_socket.AF_INET, _socket.AF_INET6):
            return None
    arg = args[_CHECKED[event]]
    return (arg[0] if arg else None) if isinstance(arg, tuple) else arg


def _record(event: str, host: object) -> None:
    stack = "".join(traceback.format_stack(limit=40)[:-2])
    with open(os.path.join(_DIR, f"found-{os.getpid()}.txt"), "a", encoding="utf-8") as fh:
        fh.write(f"pid={os.getpid()} {event} {host!r} argv={' '.join(sys.argv)[:200]}\n"
                 f"{stack}\n")


def _hook(event: str, args: tuple) -> None:
    if event not in _CHECKED:
        return
    try:
        if event == "socket.bind" and args[0].type != _socket.SOCK_DGRAM:
            return  # a TCP socket is checked when it listens
        host = _host(event, args)
        # None: not an internet socket, or getaddrinfo(None, port) (the wildcard: a bind or
        # listen of it is reported)
        if host is not None and not _loopback(host):
            _record(event, host)
    except Exception:  # the audit never breaks the process it watches
        pass


def _listen(self, *args: int) -> None:
    try:
        if self.family in (_socket.AF_INET, _socket.AF_INET6):
            host = self.getsockname()[0]
            if not _loopback(host):
                _record("socket.listen", host or "0.0.0.0")
    except Exception:
        pass
    return _socket.socket.listen(self, *args)


if _DIR:
    try:
        with open(os.path.join(_DIR, f"seen-{os.getpid()}.txt"), "w", encoding="utf-8") as fh:
            fh.write(" ".join([sys.executable, *sys.argv])[:500] + "\n")
        sys.addaudithook(_hook)
        socket.socket.listen = _listen  # no audit event exists for listen()
    except OSError:
        pass
