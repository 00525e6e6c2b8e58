"""Ray without requests of its own: no cloud metadata probe, no usage report (CPU smoke mode).

Ray 2.55 starts its API server ("dashboard") process on every head, `include_dashboard=False`
included. At start, `UsageStatsHead.run()` calls `usage_lib.get_cluster_config_to_report()`
BEFORE it checks whether usage stats are enabled, and that probes the cloud metadata servers
(http://169.254.169.254 for Azure and AWS, metadata.google.internal for GCP); a head started
with `ray start` then also reports "usage stats disabled" to usage-stats.ray.io. In the CPU
smoke mode (BAI_CPU=1 or BAI_CPU_SMOKE_TEST=1, inherited by every process of a local cluster),
or with BAI_RAY_OFFLINE=1, bai_autoload calls `patch_usage_lib` when Ray loads the module: the
probe answers "unknown" without a request and a report fails before anything is sent.
Elsewhere nothing here changes Ray.
"""

from __future__ import annotations

import os
from typing import Any

from .activate import cpu_requested, wrap

__all__ = ["OFFLINE_ENV", "patch_usage_lib"]

OFFLINE_ENV = "BAI_RAY_OFFLINE"
UNKNOWN_CLOUD = "unknown"  # what Ray's probe answers when no metadata server replies


def _no_cloud_probe(original: Any) -> str:
    return UNKNOWN_CLOUD


def _no_report(original: Any, *args: Any, **kwargs: Any) -> None:
    # UsageStatsHead logs an exception from here at debug level and carries on
    raise RuntimeError(f"{OFFLINE_ENV}: Ray sends no usage report")


def patch_usage_lib(module: Any) -> None:
    """bai_autoload's callback for `ray._common.usage.usage_lib`."""
    if not (cpu_requested() or os.environ.get(OFFLINE_ENV) == "1"):
        return
    wrap(module, "get_cloud_from_metadata_requests", _no_cloud_probe)
    wrap(module.UsageReportClient, "report_usage_data", _no_report)
