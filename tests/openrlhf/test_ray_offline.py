"""CPU smoke mode / BAI_RAY_OFFLINE: Ray's usage library (its API server's start-up) makes no
network request.

Each case runs in a fresh interpreter of this venv, so bai.pth's import hook patches Ray's
`usage_lib` as it would in Ray's API server process. An audit hook there records every
non-loopback connect and host lookup and refuses it, so no packet leaves even where Ray's own
code still tries (the control case).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")

PROGRAM = r"""
import ipaddress, json, sys

tried = []

def audit(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event in ("socket.connect", "socket.sendto") and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    tried.append(host)
    raise OSError(f"test: no network ({host})")

sys.addaudithook(audit)
from ray._common.usage import usage_lib

config = usage_lib.get_cluster_config_to_report("/nonexistent/bootstrap.yaml")
out = {"cloud": config.cloud_provider}
try:
    usage_lib.UsageReportClient().report_usage_data(
        usage_lib._usage_stats_report_url(), usage_lib.generate_disabled_report_data())
    out["report"] = "sent"
except Exception as exc:
    out["report"] = str(exc)
out["tried"] = tried
print(json.dumps(out))
"""


def probe(**env: str) -> dict:
    # not in the suite's network audit: this process's own hook records and refuses
    full = {k: v for k, v in os.environ.items()
            if k not in ("BAI_CPU", "BAI_CPU_SMOKE_TEST", "BAI_RAY_OFFLINE", "BAI_DISABLE",
                         "BAI_TEST_NETAUDIT")}
    proc = subprocess.run([sys.executable, "-c", PROGRAM], env={**full, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_outside_the_cpu_mode_ray_probes_the_cloud_metadata_servers():
    # the control: what Ray 2.55 does at every API server start, usage stats disabled or not
    out = probe(RAY_USAGE_STATS_ENABLED="0")
    assert "169.254.169.254" in out["tried"] and "metadata.google.internal" in out["tried"]
    assert "usage-stats.ray.io" in out["tried"]  # the "disabled" report of a `ray start` head


@pytest.mark.parametrize("var", ["BAI_CPU", "BAI_CPU_SMOKE_TEST", "BAI_RAY_OFFLINE"])
def test_cpu_mode_or_offline_probes_nothing_and_reports_nothing(var):
    out = probe(**{var: "1", "RAY_USAGE_STATS_ENABLED": "0"})
    assert out["tried"] == []
    assert out["cloud"] == "unknown"
    assert "no usage report" in out["report"]
