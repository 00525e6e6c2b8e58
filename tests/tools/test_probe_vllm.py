"""bai-probe end to end on the tiny model family through the real vLLM engine (CPU here)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from bai_core.metrics import compute_response_metrics, think_end_positions
from bai_core.scoring import score_answer
from bai_tools import probe
from bai_tools.probe_summary import pad_batch, probe_reward

pytest.importorskip("vllm")

N, MAX_TOKENS = 3, 64
PROMPTS = [
    {"prompt": "What is 7 + 5?", "answer": "12"},
    {"prompt": "Solve 2x + 4 = 10.", "label": "3"},
    {"prompt": "Say something."},
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2 + 3?"}], "answer": "\\boxed{5}"},
]


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """Run the real CLI once on two candidates; returns (report, png path, stdout, family)."""
    from bai_demo.toy_models import write_tiny_family

    root = tmp_path_factory.mktemp("probe")
    family = write_tiny_family(root / "family")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    out_json, out_png = root / "out" / "probe.json", root / "out" / "probe.png"
    argv = [
        str(family["base"]), str(family["reasoning"]), "--prompts", str(prompts),
        "-n", str(N), "--max-tokens", str(MAX_TOKENS), "--seed", "1",
        "--json", str(out_json), "--png", str(out_png),
    ]
    stdout = root / "stdout.txt"
    saved_env = dict(os.environ)  # the CLI sets vLLM env defaults; keep other tests clean
    try:
        with stdout.open("w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle):
            assert probe.main(argv) == 0  # vLLM needs a real file (fileno) behind sys.stdout
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    report = json.loads(out_json.read_text(encoding="utf-8"))
    return report, out_png, stdout.read_text(encoding="utf-8"), family


def test_schema_and_settings(probed):
    report, _, _, family = probed
    assert report["settings"] == {
        "n": N, "max_tokens": MAX_TOKENS, "temperature": 1.0, "top_p": 1.0, "seed": 1,
        "bucket_width": 100, "num_buckets": 20,
    }
    assert report["prompts"]["count"] == 4 and report["prompts"]["with_reference"] == 3
    names = [c["name"] for c in report["candidates"]]
    assert names == ["base", "reasoning"]
    for cand, role in zip(report["candidates"], ("base", "reasoning"), strict=True):
        assert cand["model_dir"] == str(family[role])
        assert cand["num_samples"] == len(cand["samples"]) == N * len(PROMPTS)
        assert cand["num_prompts"] == len(PROMPTS)
        assert cand["num_scored"] == N * 3
        assert cand["engine"]["max_model_len"] > MAX_TOKENS
        # the tiny chat template's generation prompt ends with "<think>\n"
        assert cand["think_open_in_prompt_ratio"] == 1.0
        for key in ("mean", "median", "p10", "p90", "std", "min", "max", "clip_ratio"):
            assert f"bai/response_length/{key}" in cand["metrics"]
        for key in ("bai/think/closed_ratio", "bai/reward/mean", "bai/reward/std"):
            assert key in cand["metrics"]


def test_samples_are_consistent_with_vllm_finish_reasons(probed):
    report, _, _, family = probed
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(family["base"])
    close_id = tok.convert_tokens_to_ids("</think>")
    for cand in report["candidates"]:
        assert cand["think_close_ids"] == [close_id]
        counts = [0] * len(PROMPTS)
        for s in cand["samples"]:
            counts[s["prompt_index"]] += 1
            ids = s["token_ids"]
            assert s["length"] == len(ids) and 1 <= len(ids) <= MAX_TOKENS
            assert s["finish_reason"] in ("stop", "length")
            if s["finish_reason"] == "length":
                assert len(ids) == MAX_TOKENS
            else:
                assert ids[-1] == tok.eos_token_id
            expected_end = ids.index(close_id) if close_id in ids else -1
            assert s["think_end"] == expected_end
            assert ("</think>" in s["text"]) == (expected_end >= 0)
        assert counts == [N] * len(PROMPTS)


def test_metrics_recomputed_from_token_ids(probed):
    report, *_ = probed
    for cand in report["candidates"]:
        samples = cand["samples"]
        ids, mask = pad_batch([s["token_ids"] for s in samples])
        lengths = mask.sum(dim=1)
        import torch

        truncated = torch.tensor([s["finish_reason"] == "length" for s in samples])
        think_end = think_end_positions(ids, mask, cand["think_close_ids"])
        expected = compute_response_metrics(lengths, truncated=truncated, think_end=think_end)
        for key, value in expected.items():
            assert cand["metrics"][key] == pytest.approx(value), key
        refs = [p.get("answer", p.get("label")) for p in PROMPTS]
        rewards = [
            probe_reward(s["text"], refs[s["prompt_index"]], True, score_answer)
            for s in samples if refs[s["prompt_index"]] is not None
        ]
        assert [s["reward"] for s in samples if refs[s["prompt_index"]] is not None] == rewards
        assert all(s["reward"] is None for s in samples if s["prompt_index"] == 2)
        assert cand["metrics"]["bai/reward/mean"] == pytest.approx(sum(rewards) / len(rewards))


def test_candidates_differ_and_table_printed(probed):
    report, _, stdout, _ = probed
    base, reasoning = report["candidates"]
    assert [s["token_ids"] for s in base["samples"]] != [
        s["token_ids"] for s in reasoning["samples"]
    ]
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["candidate", "samples", "len"]
    assert lines[2].split()[:2] == ["base", str(N * len(PROMPTS))]
    assert lines[3].split()[0] == "reasoning"
    mean = f"{base['metrics']['bai/response_length/mean']:.1f}"
    assert lines[2].split()[2] == mean


def test_png_written(probed):
    _, png, _, _ = probed
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
