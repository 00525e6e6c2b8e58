"""Hooks on OpenRLHF's REAL BasePPOTrainer / Experience (flash-attn shimmed on CPU)."""

import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("openrlhf")

from openrlhf.trainer.ppo_trainer import BasePPOTrainer  # noqa: E402
from openrlhf.trainer.ppo_utils.experience import Experience  # noqa: E402

from bai_core import metrics  # noqa: E402
from bai_core.monitor import read_rows  # noqa: E402
from openrlhf_patches import activate, hooks  # noqa: E402

THINK_ID = 5
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")


def make_tokenizer(with_think: bool = True):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "<eos>": 4}
    if with_think:
        vocab["</think>"] = THINK_ID
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def sample(prompt_len, response, *, truncated=False, reward=0.0, score=None, kl=None):
    """One Experience the way OpenRLHF's samples_generator builds it (B=1, action_mask T-1)."""
    seq = torch.tensor([2] * prompt_len + list(response), dtype=torch.long)
    action_mask = torch.zeros(len(seq), dtype=torch.long)
    action_mask[prompt_len:] = 1
    info = {"reward": torch.tensor([reward])}
    if score is not None:
        info["score"] = torch.tensor([score])
    if kl is not None:
        info["kl"] = torch.tensor([kl])
    return Experience(
        sequences=seq.unsqueeze(0),
        attention_mask=torch.ones_like(seq).unsqueeze(0),
        action_mask=action_mask[1:].unsqueeze(0),
        response_length=torch.tensor([len(response)]),
        truncated=torch.tensor([truncated]),
        total_length=torch.tensor([len(seq)]),
        info=info,
    )


def batch():
    """Two micro-batches (right padded by OpenRLHF's own concat), 4 responses."""
    s = [
        sample(3, [2, 3, THINK_ID, 2, 4], reward=1.0, score=1.0, kl=0.1),    # len 5, think 3
        sample(2, [2] * 8, truncated=True, reward=0.0, score=0.0, kl=0.3),    # len 8, unclosed
        sample(4, [THINK_ID, 3, 4], reward=0.5, score=1.0, kl=0.2),           # len 3, think 1
        sample(1, [2] * 150 + [THINK_ID, 4], reward=0.25, score=0.0, kl=0.4),  # len 152
    ]
    return [Experience.concat_experiences(s[:2], 0), Experience.concat_experiences(s[2:], 0)]


@pytest.fixture(scope="module", autouse=True)
def installed():
    assert activate.arm() is True
    assert BasePPOTrainer.__dict__.get("_bai_patched") is True
    return True


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("BAI_"):
            monkeypatch.delenv(key)
    t = object.__new__(BasePPOTrainer)
    t.args = SimpleNamespace(
        ckpt=SimpleNamespace(output_dir=str(tmp_path), save_steps=10**9),
        logger=SimpleNamespace(logging_steps=1),
    )
    t.tokenizer = make_tokenizer()
    t.wandb_logger = None
    t.tensorboard_logger = None
    t.best_eval_metric_key = ""
    t.best_eval_metric_value = float("-inf")
    t._latest_eval_metric_value = None
    return t


def test_real_compute_rollout_stats_gets_bai_keys(trainer, tmp_path):
    stats = trainer._compute_rollout_stats(batch())
    # OpenRLHF's own keys are still there and agree with ours
    assert stats["rollout/num_samples"] == 4.0
    assert stats["rollout/response_length_mean"] == pytest.approx(42.0)
    assert stats["bai/response_length/mean"] == pytest.approx(42.0)
    assert stats["bai/reward/mean"] == pytest.approx(stats["rollout/reward_mean"])
    assert stats["bai/response_length/clip_ratio"] == pytest.approx(0.25)
    assert stats["bai/response_length/max"] == 152.0
    assert stats["bai/think/closed_ratio"] == pytest.approx(0.75)
    # think lengths 3, 8 (unclosed), 1, 151 -> mean 40.75; answers 2, 0, 2, 1 -> 1.25
    assert stats["bai/think/think_length_mean"] == pytest.approx(40.75)
    assert stats["bai/think/answer_length_mean"] == pytest.approx(1.25)
    assert stats["bai/reward_by_length/0000-0100/count"] == 3.0
    assert stats["bai/reward_by_length/0000-0100/mean"] == pytest.approx(0.5)
    assert stats["bai/reward_by_length/0100-0200/mean"] == pytest.approx(0.25)
    assert stats["bai/kl/mean"] == pytest.approx(0.25)
    assert stats["bai/response_length/correct_mean"] == pytest.approx(4.0)
    assert stats["bai/detector/length_collapse"] == 0.0
    rows = read_rows(str(tmp_path / "bai_metrics.jsonl"))
    assert len(rows) == 1 and rows[0]["step"] == 1
    assert rows[0]["bai/response_length/mean"] == pytest.approx(42.0)
    assert rows[0]["bai/reward/mean"] == pytest.approx(0.4375)
    assert all(k == "step" or k.startswith("bai/") for k in rows[0])


def test_zero_spread_groups_from_experience_index(trainer):
    trainer.args.rollout = SimpleNamespace(n_samples_per_prompt=2)
    exps = [sample(2, [2] * n, reward=r) for n, r in [(3, 1.0), (4, 1.0), (5, 0.0), (6, 1.0)]]
    for i, e in enumerate(exps):
        e.index = [i]  # what OpenRLHF's split_rollout_samples sets
    # shuffled micro-batches, as with dynamic batching: grouping must follow `index`
    stats = trainer._compute_rollout_stats([Experience.concat_experiences([exps[3], exps[0]], 0),
                                            Experience.concat_experiences([exps[2], exps[1]], 0)])
    assert stats["bai/reward/zero_spread_group_ratio"] == pytest.approx(0.5)


def test_no_think_token_in_vocab_skips_think_metrics(trainer):
    trainer.tokenizer = make_tokenizer(with_think=False)
    stats = trainer._compute_rollout_stats(batch())
    assert "bai/response_length/mean" in stats
    assert not any(k.startswith("bai/think/") for k in stats)


def test_detectors_over_steps_ratio_and_step_from_train_step(trainer, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="bai")
    long = [sample(2, [2] * 400, reward=1.0)]
    short = [sample(2, [2] * 50, reward=1.0)]
    for step, exps in enumerate([long, long, long, short, short, short], start=10):
        trainer.__dict__["_bai_step"] = step  # what the wrapped train_step sets
        stats = trainer._compute_rollout_stats(exps)
    assert stats["bai/response_length/ratio_to_init"] == pytest.approx(50 / 400)
    assert stats["bai/reward/delta_from_init"] == pytest.approx(0.0)
    assert stats["bai/detector/length_collapse"] == 1.0
    assert any("Sequence Length Collapse at step 14" in r.message for r in caplog.records)
    steps = [r["step"] for r in read_rows(str(tmp_path / "bai_metrics.jsonl"))]
    assert steps == [10, 11, 12, 13, 14, 15]


def test_failing_metric_does_not_break_the_step(trainer, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="bai")

    def boom(*a, **k):
        raise RuntimeError("deliberate metric failure")

    monkeypatch.setattr(metrics, "compute_response_metrics", boom)
    for _ in range(2):
        stats = trainer._compute_rollout_stats(batch())
        assert stats["rollout/num_samples"] == 4.0
        assert "bai/response_length/mean" not in stats
        assert stats["bai/kl/mean"] == pytest.approx(0.25)  # other parts still run
    fails = [r for r in caplog.records if "deliberate metric failure" in r.getMessage()]
    assert len(fails) == 1  # logged once per kind


def test_failing_extraction_does_not_break_the_step(trainer, monkeypatch):
    monkeypatch.setattr(hooks, "batch_from_experiences", lambda *a: 1 / 0)
    stats = trainer._compute_rollout_stats(batch())
    assert stats["rollout/reward_mean"] == pytest.approx(0.4375)
    assert not any(k.startswith("bai/") for k in stats)


def test_client_states_round_trip_and_resume(trainer, tmp_path):
    long = [sample(2, [2] * 400, reward=1.0)]
    for _ in range(4):
        trainer._compute_rollout_stats(long)
    cs = {"global_step": 4}
    trainer.save_logs_and_checkpoints(4, {"x": 1.0}, cs)
    state = json.loads(json.dumps(cs[hooks.STATE_KEY]))  # JSON-serializable
    fresh = object.__new__(BasePPOTrainer)
    fresh.__dict__.update({k: v for k, v in trainer.__dict__.items() if k != "_bai_monitor"})
    fresh.restore_best_checkpoint_state({"global_step": 4, hooks.STATE_KEY: state})
    mon = fresh.__dict__["_bai_monitor"]
    assert mon.length.baseline == 400.0 and mon.step_counter == 4
    stats = fresh._compute_rollout_stats([sample(2, [2] * 100, reward=1.0)])
    assert stats["bai/response_length/ratio_to_init"] == pytest.approx(0.25)


def test_stop_on_collapse(trainer, monkeypatch):
    monkeypatch.setenv("BAI_STOP_ON_COLLAPSE", "1")
    monkeypatch.setenv("BAI_EMA", "1.0")
    for n in (400, 400, 400, 100):
        trainer._compute_rollout_stats([sample(2, [2] * n, reward=1.0)])
    with pytest.raises(hooks.BaiEarlyStop):
        trainer.save_logs_and_checkpoints(4, {}, {})
    trainer.save_logs_and_checkpoints(5, {}, {})  # raised once only


def test_version_guard(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="bai")
    monkeypatch.setattr(activate, "openrlhf_version", lambda: "0.11.1")
    monkeypatch.setattr(hooks, "patch_module", lambda m: pytest.fail("patched anyway"))
    meta = list(sys.meta_path)
    assert activate.arm() is False
    assert sys.meta_path == meta
    warnings = [r for r in caplog.records if "support 0.11.2 exactly" in r.getMessage()]
    assert len(warnings) == 1 and "0.11.1" in warnings[0].getMessage()
    monkeypatch.undo()
    assert activate.arm() is True


def test_bad_env_value_never_raises(trainer, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="bai")
    monkeypatch.setenv("BAI_COLLAPSE_DROP", "not-a-number")
    assert activate.arm() is False  # must not break OpenRLHF's import in any process
    errors = [r for r in caplog.records if "not-a-number" in r.getMessage()]
    assert len(errors) == 1 and "hooks are OFF" in errors[0].getMessage()
    for _ in range(3):
        stats = trainer._compute_rollout_stats(batch())
        assert stats["rollout/num_samples"] == 4.0
    assert sum("not-a-number" in r.getMessage() for r in caplog.records) <= 2


def test_patch_reports_missing_methods():
    class NotATrainer:
        def _compute_rollout_stats(self, experiences):
            return {}

    assert hooks.patch_trainer_class(NotATrainer) is False
    assert not hasattr(NotATrainer, "_bai_patched")


def test_installed_bai_patches_openrlhf_on_import_and_imports_nothing_heavy():
    """Fresh interpreter, no call of ours: bai.pth arms the hooks when `openrlhf` loads, which
    imports neither torch nor the trainer; importing the trainer module patches it."""
    code = (
        "import sys; import openrlhf;"
        "print('LIGHT', 'torch' not in sys.modules, 'openrlhf_patches.hooks' not in sys.modules,"
        "      'openrlhf_patches.activate' in sys.modules);"
        "import openrlhf.trainer.ppo_trainer as m;"
        "print('PATCHED', m.BasePPOTrainer.__dict__.get('_bai_patched'))"
    )
    import flash_attn

    shim = "bai-test-shim" in getattr(flash_attn, "__version__", "")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SHIMS, REPO] if shim else [REPO]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LIGHT True True True" in out.stdout
    assert "PATCHED True" in out.stdout
