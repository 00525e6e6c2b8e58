"""One rank of the 2-process run of test_trl_distributed.py: GRPO with BaiCallback; the reward
function also writes the raw samples this process saw.

`python trl_dist_run.py ACTOR OUT STEPS STORE` with RANK, WORLD_SIZE, LOCAL_RANK set. The process
group is made here from a FileStore (STORE) and gloo on the loopback (GLOO_SOCKET_IFNAME=lo);
accelerate then uses it as is (MULTI_CPU). torchrun / `accelerate launch` would start a TCPStore
that listens on every interface.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trl_helpers import train  # noqa: E402
from trl_rewards import length_reward  # noqa: E402

from bai_core.config import BaiConfig  # noqa: E402
from bai_trl import BaiCallback  # noqa: E402


def main(actor: str, out: str, steps: int, store: str) -> None:
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=int(os.environ["WORLD_SIZE"]))
    logging.basicConfig(level=logging.WARNING, format=f"[rank{rank}] %(name)s %(message)s")
    logging.getLogger("bai").setLevel(logging.INFO)
    dump = Path(out) / "samples"
    dump.mkdir(parents=True, exist_ok=True)

    def recorded(completion_ids, trainer_state, **kwargs):
        rewards = length_reward(completion_ids)
        step = trainer_state.global_step + 1
        with open(dump / f"rank{rank}-step{step}.json", "w", encoding="utf-8") as fh:
            json.dump({"ids": [list(map(int, ids)) for ids in completion_ids],
                       "rewards": rewards}, fh)
        return rewards

    recorded.__name__ = "length_reward"
    bai = BaiCallback(BaiConfig())
    trainer = train("grpo", Path(actor), Path(out), bai.wrap([recorded]), [bai], steps,
                    per_device_train_batch_size=8, num_generations=4, report_to="none")
    if rank == 0:  # what TRL's log() handed to every reporter
        (dump / "log_history.json").write_text(json.dumps(trainer.state.log_history))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
