"""TEST-ONLY reward schedule: a Reward Hockey Stick by construction, for the detector plumbing.

Reward 1.0 on steps 1-3, 0.3 on steps 4-6, 1.2 from step 7 on (a dip, then a recovery above the
start). The step is counted from the samples scored so far (BAI_TEST_SAMPLES_PER_STEP a step):
OpenRLHF scores every sample of a step before it generates the next.
"""

import os
import threading

import torch

PER_STEP = int(os.environ.get("BAI_TEST_SAMPLES_PER_STEP", "8"))
_lock = threading.Lock()
_seen = 0


def _value(step: int) -> float:
    return 1.0 if step <= 3 else 0.3 if step <= 6 else 1.2


def reward_func(queries, prompts, labels, **kwargs):
    global _seen
    out = []
    with _lock:
        for _ in queries:
            out.append(_value(_seen // PER_STEP + 1))
            _seen += 1
    r = torch.tensor(out, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
