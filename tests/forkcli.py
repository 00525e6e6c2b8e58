"""Run this venv's console scripts as forked children of a process that imported them once.

A `mergekit-yaml` process spends about 5 s importing (torch, transformers, peft) before it
reads its config; most merge tests run it dozens of times. A server process here imports each
tool's entry module once, with the same environment the tests give the tool, and forks a child
per call. The child is a separate process, as from a shell: its own working folder, environment,
argv, stdout/stderr, exit status and signals; it runs the console script's entry point (from the
venv's entry-point metadata), then Python's exit handlers. What a fork cannot give is a fresh
interpreter start: tests about start-up itself (bai.pth, the import hook, what a user's shell
environment prints) start real processes instead.

Variables read at interpreter or import start (PYTHONPATH, PYTHONWARNINGS, HF_HUB_OFFLINE, the
verbosity of transformers' logging) are the server's: one server per distinct environment, so a
call always runs under the environment it asked for.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

_SERVERS: dict[tuple, list[ForkServer]] = {}
_LOCK = threading.Lock()


class ForkServer:
    """One server process: requests go in one at a time (a JSON line), the child's exit status
    comes back (a JSON line)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lock = threading.Lock()

    def run(self, argv: list[str], cwd: str, env: dict[str, str],
            timeout: float | None) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="forkcli-") as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            request = {"argv": argv, "cwd": cwd, "env": env, "out": str(out), "err": str(err),
                       "timeout": timeout}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"fork server {self.proc.pid} died (exit {self.proc.poll()})")
            reply = json.loads(line)
            if reply.get("timeout"):
                raise subprocess.TimeoutExpired(argv, timeout or 0)
            return subprocess.CompletedProcess(argv, reply["returncode"],
                                               out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _close_all() -> None:
    for servers in _SERVERS.values():
        for server in servers:
            server.close()


atexit.register(_close_all)


def run(argv: list[str], cwd: str | Path | None = None, env: dict[str, str] | None = None,
        timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Like `subprocess.run(argv, capture_output=True, text=True)` for a console script of this
    venv (argv[0]: its path or name), in a forked child of a server with the same environment;
    concurrent calls get servers of their own."""
    env = dict(os.environ if env is None else env)
    key = tuple(sorted(env.items()))
    with _LOCK:
        servers = _SERVERS.setdefault(key, [])
        server = next((s for s in servers if not s.lock.locked()), None)
        if server is None:
            server = ForkServer(env)
            servers.append(server)
        server.lock.acquire()
    try:
        return server.run([str(a) for a in argv], str(cwd or os.getcwd()), env, timeout)
    finally:
        server.lock.release()


# --- the server process ----------------------------------------------------------------------

PRELOAD = ("mergekit.scripts.run_yaml", "mergekit.scripts.multimerge", "bai_tools.sweep_cli",
           "mergekit.merge_methods", "transformers", "safetensors.torch")


def _entry(name: str) -> Any:
    script = Path(name).name
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == script]
    if not found:
        raise SystemExit(f"forkcli: no console script {script!r} in this environment")
    return found[0].load()


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the tool's process, run it, exit with its status."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["out"]), (2, request["err"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.argv = list(request["argv"])
        try:
            result = _entry(sys.argv[0])()
            code = result if isinstance(result, int) else 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _serve() -> None:
    import importlib
    import signal

    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            _child(request)
        timed_out = False
        timer = None
        if request.get("timeout"):
            def kill(pid=pid):
                nonlocal timed_out
                timed_out = True
                os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(request["timeout"], kill)
            timer.start()
        _, status = os.waitpid(pid, 0)
        if timer is not None:
            timer.cancel()
        reply = {"returncode": os.waitstatus_to_exitcode(status), "timeout": timed_out}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
