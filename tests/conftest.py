"""Loopback only, for the whole suite: every Python process a test starts is network-audited.

At start-up the test session gets an audit root folder, and BAI_TEST_NETAUDIT / PYTHONPATH make
every Python subprocess (and this process) load tests/netaudit/sitecustomize.py, which records
each connect, sendto, listen, UDP bind and host lookup outside loopback (see tests/sockets.py).
Tests that check a run themselves record into their own folders under the same root. At the end
anything recorded anywhere is printed and fails the session; the folder is removed when clean.
The model hub is off for the whole session (nothing is downloaded at run time).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from sockets import AUDIT_ROOT_ENV, NETAUDIT, audit_env, audit_findings

# no model hub at run time, so no hub telemetry either (TRL's trainers send it from a thread);
# set here, before anything imports huggingface_hub, which reads them once at import
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_key, "1")

_ROOT: Path | None = None
# `make test` runs two pytest-xdist workers (`-n 2 --dist loadfile`): each test file runs in
# one worker, so its module fixtures are built once; the slowest files start first so that the
# short ones fill the gaps at the end (measured: docs/tests.md).
# the slowest files first; test_stock_launch needs no toy family, so the second worker runs it
# while the first builds the small family the others wait for
SLOWEST_FIRST = ("tests/demo/test_toy_world.py", "tests/e2e/test_stock_launch.py",
                 "tests/e2e/test_collapse_e2e.py", "tests/e2e/test_train_e2e.py",
                 "tests/tools/test_compare.py", "tests/e2e/test_two_nodes.py")


def pytest_configure(config: pytest.Config) -> None:
    global _ROOT
    if os.environ.get(AUDIT_ROOT_ENV):
        return  # a session inside an audited one: the outer session reports
    _ROOT = Path(tempfile.mkdtemp(prefix="bai-netaudit-"))
    env = audit_env({"PYTHONPATH": os.environ.get("PYTHONPATH", "")}, _ROOT / "session")
    os.environ.update(env, **{AUDIT_ROOT_ENV: str(_ROOT)})
    spec = importlib.util.spec_from_file_location("bai_netaudit", NETAUDIT / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # this process too


E2E_TIMEOUT = 2100  # s, per e2e test (pyproject's 600 s elsewhere)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest files first (a stable sort): `--dist loadfile` hands files out in order."""
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)
    # An e2e test's first use of its module fixture includes the whole recipe run (up to
    # RUN_TIMEOUT, 900 s; a resume chains two) and may include the small family's build (about
    # 4 min on one busy core): 600 s cut the slow kind of CI machine short (measured 2026-12-08)
    for item in items:
        if item.nodeid.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


@pytest.fixture(scope="session")
def small_family():
    """The small toy family (bai_demo.toy_world.SMALL) from the user cache
    (~/.cache/bai/toy-world/<hash>, or $BAI_TOY_WORLD_CACHE): the first session trains it, later
    ones reuse it; a file lock makes one build serve every xdist worker."""
    from filelock import FileLock

    from bai_demo.toy_world import SMALL, build_family, cache_root

    # one training thread: the other xdist worker runs tests on the other core meanwhile
    os.environ.setdefault("BAI_TOY_WORLD_THREADS", "1")
    start = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / f".{SMALL.key}.lock")):
        family = build_family(SMALL)
    print(f"small toy world ready in {time.monotonic() - start:.0f} s: {family.root}")
    return family


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ROOT is None:
        return
    found = audit_findings(_ROOT)
    if not found:
        shutil.rmtree(_ROOT, ignore_errors=True)
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"network audit: {len(found)} use(s) of the network outside 127.0.0.0/8 "
             f"(records in {_ROOT}):", *found]
    for line in lines:
        reporter.write_line(line, red=True) if reporter else print(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

