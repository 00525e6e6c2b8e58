"""A two-node Ray cluster on this machine, loopback only: a head without CPUs or GPUs (as Ray
advises for large clusters), a node with the CPUs and the GPUs.

Run as a script (in its own process session); writes the cluster address to argv[1] and keeps
the cluster up until it is killed. The tests stop its whole session.
"""

from __future__ import annotations

import os
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # node address 127.0.0.1 (see cpu_mode)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from ray.cluster_utils import Cluster  # noqa: E402

if __name__ == "__main__":
    out, temp = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "temp_dir": temp})
    cluster.add_node(num_cpus=8, num_gpus=3)  # actor, reference model, one vLLM engine
    cluster.wait_for_nodes()
    with open(out + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(cluster.address)
    os.replace(out + ".tmp", out)
    while True:
        time.sleep(60)
