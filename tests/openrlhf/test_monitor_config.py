"""BaiConfig.validate (one rule per threshold), kl_is_computed, and what BaiMonitor logs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch

from bai_core.config import THRESHOLDS, BaiConfig, flag
from bai_core.monitor import BaiMonitor, read_rows
from openrlhf_patches.experiences import batch_from_experiences, kl_is_computed

BAD = [
    ("collapse_drop", 0.0, "--bai.collapse_drop must be in (0, 1), got 0.0"),
    ("collapse_drop", 1.0, "--bai.collapse_drop must be in (0, 1), got 1.0"),
    ("collapse_drop", math.nan, "--bai.collapse_drop must be a finite number, got nan"),
    ("collapse_recover", -0.5, "--bai.collapse_recover must be in (0, 1], got -0.5"),
    ("collapse_recover", 1.5, "--bai.collapse_recover must be in (0, 1], got 1.5"),
    ("collapse_recover", 0.4, "--bai.collapse_recover must be >= 1 - --bai.collapse_drop = 0.5"),
    ("collapse_max_onset_step", -1, "--bai.collapse_max_onset_step must be >= 0"),
    ("baseline_steps", 0, "--bai.baseline_steps must be >= 1, got 0"),
    ("ema", 0.0, "--bai.ema must be in (0, 1]"),
    ("ema", math.inf, "--bai.ema must be a finite number, got inf"),
    ("reward_dip_std", -0.1, "--bai.reward_dip_std must be >= 0, got -0.1"),
    ("reward_dip_rel", math.nan, "--bai.reward_dip_rel must be a finite number, got nan"),
    ("reward_dip_abs", -math.inf, "--bai.reward_dip_abs must be a finite number, got -inf"),
    ("bucket_width", 0, "--bai.bucket_width must be >= 1, got 0"),
    ("num_buckets", -3, "--bai.num_buckets must be >= 1, got -3"),
    ("num_buckets", 2.5, "--bai.num_buckets must be an integer, got 2.5"),
    ("stop_on_collapse", "yes", "--bai.stop_on_collapse must be true or false, got 'yes'"),
]


def test_defaults_are_valid_and_every_threshold_has_a_rule():
    BaiConfig().validate()
    numeric = {f.name for f in dataclasses.fields(BaiConfig) if f.type in ("int", "float")}
    assert numeric == set(THRESHOLDS)
    assert flag("collapse_drop") == "--bai.collapse_drop"
    assert flag("collapse_drop", "tool") == "--collapse-drop"
    assert flag("collapse_drop", "env") == "BAI_COLLAPSE_DROP"


@pytest.mark.parametrize(("field", "value", "message"), BAD)
def test_validate_names_option_and_value(field, value, message):
    config = dataclasses.replace(BaiConfig(), **{field: value})
    with pytest.raises(ValueError) as info:
        config.validate()
    assert message in str(info.value)
    with pytest.raises(ValueError):
        BaiMonitor(config)  # the monitor refuses the same config


def test_validate_names_the_flag_of_the_caller_style():
    config = BaiConfig(collapse_drop=1.5)
    with pytest.raises(ValueError, match=r"^--collapse-drop must be in \(0, 1\), got 1.5$"):
        config.validate("tool")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BAI_COLLAPSE_DROP": "abc"}, "BAI_COLLAPSE_DROP='abc' is not a valid float"),
        ({"BAI_BASELINE_STEPS": "2.5"}, "BAI_BASELINE_STEPS='2.5' is not a valid int"),
        ({"BAI_STOP_ON_COLLAPSE": "maybe"}, "BAI_STOP_ON_COLLAPSE='maybe' is not a valid bool"),
    ],
)
def test_from_env_names_the_variable(env, needle):
    with pytest.raises(ValueError) as info:
        BaiConfig.from_env(env)
    assert needle in str(info.value)


def test_env_round_trip_then_validate_rejects_nan():
    config = BaiConfig.from_env({"BAI_EMA": "nan", "BAI_STOP_ON_COLLAPSE": "off"})
    assert config.stop_on_collapse is False and math.isnan(config.ema)
    with pytest.raises(ValueError, match="--bai.ema must be a finite number, got nan"):
        config.validate()
    good = BaiConfig(collapse_drop=0.3, baseline_steps=5, stop_on_collapse=True)
    assert BaiConfig.from_env(good.to_env()) == good


def openrlhf_args(**flat) -> SimpleNamespace:
    """Args shaped as OpenRLHF 0.11.2 hands them to its trainer: its parser's dotted dests
    (`--algo.kl.init_coef` -> "algo.kl.init_coef"), nested by its own `hierarchize`."""
    from openrlhf.utils.config import hierarchize

    defaults = {"algo.kl.init_coef": 0.01, "algo.kl.use_loss": False, "algo.kl.estimator": "k1",
                "ckpt.output_dir": "./ckpt"}
    return hierarchize(argparse.Namespace(**{**defaults, **flat}))


def test_kl_is_computed_follows_openrlhf_experience_maker():
    pytest.importorskip("openrlhf")
    assert kl_is_computed(openrlhf_args()) is True  # reference model, KL in the reward
    assert kl_is_computed(openrlhf_args(**{"algo.kl.init_coef": 0.0})) is False  # no ref model
    assert kl_is_computed(openrlhf_args(**{"algo.kl.use_loss": True})) is False  # KL as loss
    assert kl_is_computed(openrlhf_args(**{"algo.kl.init_coef": 0.0,
                                           "algo.kl.use_loss": True})) is False
    # defensive: unknown shapes count as computed
    assert kl_is_computed(None) is True
    assert kl_is_computed(SimpleNamespace(ckpt=None)) is True
    assert kl_is_computed(SimpleNamespace(algo=SimpleNamespace(kl=SimpleNamespace()))) is True


def exp(length: int, reward: float, kl: float = 0.0) -> SimpleNamespace:
    """The Experience fields BaiMonitor reads (one response)."""
    return SimpleNamespace(
        response_length=torch.tensor([length]), truncated=torch.tensor([False]),
        info={"reward": torch.tensor([reward]), "kl": torch.tensor([kl])},
        sequences=None, action_mask=None,
    )


def test_log_kl_false_leaves_kl_keys_out(tmp_path):
    on = BaiMonitor(BaiConfig(), jsonl_path=str(tmp_path / "on.jsonl"))
    off = BaiMonitor(BaiConfig(), jsonl_path=str(tmp_path / "off.jsonl"), log_kl=False)
    batch = batch_from_experiences([exp(10, 1.0, 0.0), exp(20, 0.0, 0.0)], [])
    assert on.compute(batch, 1)["bai/kl/mean"] == 0.0
    stats = off.compute(batch, 1)
    assert not any(k.startswith("bai/kl/") for k in stats)
    assert stats["bai/response_length/mean"] == 15.0
    assert not any(k.startswith("bai/kl/") for k in read_rows(str(tmp_path / "off.jsonl"))[0])


def test_detector_state_is_logged_as_floats(tmp_path):
    mon = BaiMonitor(BaiConfig(ema=1.0), jsonl_path=str(tmp_path / "m.jsonl"))
    series = [(400, 1.0), (400, 1.0), (400, 1.0), (100, 0.5), (100, 0.5)]
    logged = [mon.compute(batch_from_experiences([exp(n, r)], []), step)
              for step, (n, r) in enumerate(series, start=1)]
    assert "bai/detector/length_baseline" not in logged[1]  # unknown: left out, not NaN
    assert logged[1]["bai/detector/length_smoothed"] == 400.0
    last = logged[-1]
    assert last["bai/detector/length_baseline"] == 400.0
    assert last["bai/detector/length_onset_step"] == 4.0
    assert last["bai/detector/length_min_ratio"] == 0.25
    assert last["bai/detector/reward_baseline"] == 1.0
    assert last["bai/detector/reward_baseline_std"] == 0.0
    assert last["bai/detector/reward_onset_step"] == 4.0
    assert last["bai/detector/length_collapse"] == 1.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in last.values())
    rows = read_rows(str(tmp_path / "m.jsonl"))
    assert rows[-1]["bai/detector/length_onset_step"] == 4.0
    json.dumps(rows)
