"""TRL fixtures: a tiny BAI actor merged by stock `mergekit-yaml`, and real TRL 1.16 runs on CPU.

The family is `bai_demo.toy_models.write_tiny_family` at hidden 64, 2 layers (its tokenizer has
`<think>`/`</think>`); the actor is merged offline by the real `mergekit-yaml` CLI as a user
would. Training runs use TRL's own GRPOTrainer/RLOOTrainer in this process (`use_vllm=False`,
`bf16=False`, CPU), TensorBoard through transformers' own callback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def actor(tmp_path_factory) -> Path:
    """The tiny BAI actor: stock `mergekit-yaml` over a hidden-64, 2-layer family."""
    from bai_demo.toy_models import TinySpec, tiny_merge_recipe, write_tiny_family

    root = tmp_path_factory.mktemp("trl-actor")
    spec = TinySpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    write_tiny_family(root / "fam", spec=spec)
    (root / "merge.yaml").write_text(tiny_merge_recipe(dtype="float32"))
    proc = subprocess.run([str(VENV_BIN / "mergekit-yaml"), "merge.yaml", "actor", "--quiet"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "actor" / "model.safetensors").is_file()
    return root / "actor"


@pytest.fixture(scope="session")
def tokenizer(actor):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(actor)

