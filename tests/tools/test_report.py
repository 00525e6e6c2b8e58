"""bai-report: events from JSONL and real OpenRLHF TensorBoard logs, --json contract, PNG."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import tools_curves as curves
import torch

from bai_tools import report
from bai_tools.runlog import load_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_openrlhf_tensorboard(tb_dir: Path, run_name: str, lengths, rewards) -> Path:
    """Log through OpenRLHF's own TensorboardLogger the stats its trainer computes."""
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer
    from openrlhf.utils.logging_utils import TensorboardLogger

    args = SimpleNamespace(
        logger=SimpleNamespace(
            tensorboard_dir=str(tb_dir), wandb=SimpleNamespace(run_name=run_name)
        )
    )
    logger = TensorboardLogger(args)
    for step, length, reward in zip(curves.STEPS, lengths, rewards, strict=True):
        exp = SimpleNamespace(
            info={"reward": torch.full((8,), reward)},
            response_length=torch.full((8,), length),
            truncated=torch.tensor([length > 2000] * 8),
        )
        stats = BasePPOTrainer._compute_rollout_stats(None, [exp])
        logger.log_train(step, {**stats, "generated_samples": ("sample text", 0.5)})
    logger.close()
    return tb_dir / run_name


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()  # drop whatever imports printed before
    assert report.main(["--json", "-", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys, argv, status: int = 1) -> str:
    """bai-report's exit status must be `status`; returns its one `bai-report: error:` line."""
    capsys.readouterr()
    assert report.main(argv) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("bai-report: error: ") and "\n" not in lines[-1]
    return lines[-1]


@pytest.fixture()
def logs(tmp_path):
    """Three runs as bai_metrics.jsonl: collapse (recovers), reward dip, healthy."""
    return {
        "collapse": curves.write_jsonl(
            tmp_path / "collapse" / "bai_metrics.jsonl",
            curves.bai_rows(curves.collapse_lengths(), curves.healthy_rewards()),
        ),
        "dip": curves.write_jsonl(
            tmp_path / "dip" / "bai_metrics.jsonl",
            curves.bai_rows(curves.healthy_lengths(), curves.dip_rewards()),
        ),
        "healthy": curves.write_jsonl(
            tmp_path / "healthy.jsonl",
            curves.bai_rows(curves.healthy_lengths(), curves.healthy_rewards()),
        ),
    }


def test_events_on_synthetic_jsonl(logs, capsys):
    out = run_json(capsys, str(logs["collapse"].parent), str(logs["dip"]), str(logs["healthy"]))
    by_name = {r["name"]: r for r in out["runs"]}
    assert list(by_name) == ["collapse", "dip", "healthy"]

    lc = by_name["collapse"]["length_collapse"]
    assert lc["detected"] and 6 <= lc["onset_step"] <= 8
    assert lc["min_ratio"] == pytest.approx(0.3, abs=0.02)
    assert 8 <= lc["min_step"] < 24
    assert 24 <= lc["recovery_step"] <= 27
    assert lc["source_key"] == "bai/response_length/mean"
    assert not by_name["collapse"]["reward_hockey_stick"]["detected"]

    hs = by_name["dip"]["reward_hockey_stick"]
    assert hs["detected"] and 6 <= hs["onset_step"] <= 8
    assert 8 <= hs["min_step"] < 22
    assert hs["depth"] == pytest.approx(0.3, abs=0.02)
    assert 22 <= hs["recovery_step"] <= 24
    assert hs["steps_to_recover"] == hs["recovery_step"] - hs["onset_step"]
    assert not by_name["dip"]["length_collapse"]["detected"]

    healthy = by_name["healthy"]
    assert not healthy["length_collapse"]["detected"]
    assert not healthy["reward_hockey_stick"]["detected"]
    assert healthy["length_collapse"]["min_ratio"] > 0.9
    assert healthy["steps"] == len(curves.STEPS)


def test_collapse_without_recovery_and_text_output(tmp_path, capsys):
    path = curves.write_jsonl(
        tmp_path / "run.jsonl",
        curves.bai_rows(curves.collapse_lengths(recover_at=None), curves.healthy_rewards()),
    )
    assert report.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "Sequence Length Collapse [bai/response_length/mean]: DETECTED at step" in text
    assert "not recovered" in text
    assert "Reward Hockey Stick [bai/reward/mean]: not detected" in text
    lc = run_json(capsys, str(path))["runs"][0]["length_collapse"]
    assert lc["detected"] and lc["recovery_step"] is None


def test_json_contract_exact_types(logs, capsys):
    out = run_json(capsys, str(logs["collapse"]), str(logs["healthy"]))
    assert isinstance(out["runs"], list) and len(out["runs"]) == 2
    contract = {
        "length_collapse": {"detected": bool, "onset_step": (int, type(None)),
                            "min_ratio": float, "min_step": (int, type(None)),
                            "recovery_step": (int, type(None))},
        "reward_hockey_stick": {"detected": bool, "onset_step": (int, type(None)),
                                "min_step": (int, type(None)), "depth": float,
                                "recovery_step": (int, type(None))},
    }
    for run in out["runs"]:
        assert isinstance(run["name"], str)
        assert isinstance(run["steps"], int) and not isinstance(run["steps"], bool)
        for section, fields in contract.items():
            for key, kind in fields.items():
                value = run[section][key]
                assert isinstance(value, kind), (section, key, value)
                if kind is not bool:
                    assert not isinstance(value, bool), (section, key)
    healthy = out["runs"][1]
    assert healthy["length_collapse"]["onset_step"] is None
    assert healthy["reward_hockey_stick"]["depth"] == 0.0


def test_tensorboard_from_openrlhf_logger_matches_jsonl(tmp_path, capsys):
    lengths, rewards = curves.collapse_lengths(), curves.dip_rewards()
    tb_root = tmp_path / "tb"
    write_openrlhf_tensorboard(tb_root, "ppo_run", lengths, rewards)
    jsonl = curves.write_jsonl(
        tmp_path / "same.jsonl",
        [{"step": s, **curves.openrlhf_stats(n, r)}
         for s, n, r in zip(curves.STEPS, lengths, rewards, strict=True)],
    )
    runs = load_runs(str(tb_root))
    assert [r.kind for r in runs] == ["tensorboard"]
    assert runs[0].curve_key("length_mean") == "rollout/response_length_mean"
    assert runs[0].curve_key("clip_ratio") == "rollout/truncated_rate"
    assert runs[0].curve_key("think_closed") is None

    out = run_json(capsys, f"tb={tb_root}", f"jl={jsonl}")
    tb, jl = out["runs"]
    assert tb["name"] == "tb" and tb["kind"] == "tensorboard" and tb["steps"] == 40
    assert tb["length_collapse"]["source_key"] == "rollout/response_length_mean"
    assert tb["reward_hockey_stick"]["source_key"] == "rollout/reward_mean"
    for section in ("length_collapse", "reward_hockey_stick"):
        assert tb[section]["detected"]
        for key in ("onset_step", "min_step", "recovery_step"):
            assert tb[section].get(key) == jl[section].get(key), (section, key)
    assert tb["reward_hockey_stick"]["depth"] == pytest.approx(
        jl["reward_hockey_stick"]["depth"], abs=1e-5
    )


def test_tensorboard_dir_with_several_runs(tmp_path, capsys):
    root = tmp_path / "tb"
    write_openrlhf_tensorboard(root, "control", curves.collapse_lengths(), curves.dip_rewards())
    write_openrlhf_tensorboard(root, "bai", curves.healthy_lengths(), curves.healthy_rewards())
    out = run_json(capsys, str(root))
    by_name = {r["name"]: r for r in out["runs"]}
    assert set(by_name) == {"tb/control", "tb/bai"}
    assert by_name["tb/control"]["length_collapse"]["detected"]
    assert not by_name["tb/bai"]["length_collapse"]["detected"]


def test_detector_flags_reach_the_detectors(tmp_path, capsys):
    mild = [1000.0 if s < 6 else 650.0 for s in curves.STEPS]  # a 35 % drop
    path = curves.write_jsonl(tmp_path / "m.jsonl", curves.bai_rows(mild, curves.healthy_rewards()))
    assert not run_json(capsys, str(path))["runs"][0]["length_collapse"]["detected"]
    out = run_json(capsys, str(path), "--collapse-drop", "0.3")
    assert out["runs"][0]["length_collapse"]["detected"]
    assert out["detector_params"]["length_collapse"]["collapse_drop"] == 0.3
    late = run_json(capsys, str(path), "--collapse-drop", "0.3", "--collapse-max-onset-step", "5")
    assert not late["runs"][0]["length_collapse"]["detected"]
    assert "drop must be in" in error_line(capsys, [str(path), "--collapse-drop", "1.5"])


def test_png_overlay(logs, tmp_path, capsys):
    out = tmp_path / "fig" / "report.png"
    assert report.main([str(logs["collapse"]), str(logs["dip"]), "--png", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 30_000


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "no metrics logged"),
        ('{"step": 1, "bai/reward/mean": 0.5}\n{"step": 2,\n{"step": 3}\n', ":2: invalid JSON"),
        ('{"step": 1, "bai/reward/mean": 0.5}\n{"step": 2,\n', ":2: invalid JSON"),
        ('{"step": 1, "x": 1}\n\n[1, 2]\n', ":3: expected a JSON object"),
        ('{"step": 1, "x": 1}\n{"x": 2}\n', ":2: missing or non-integer 'step'"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, needle, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    message = error_line(capsys, [str(path)])
    assert str(path) in message and needle in message


def test_missing_and_empty_run_dirs(tmp_path, capsys):
    assert "no such file or directory" in error_line(capsys, [str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "neither bai_metrics.jsonl nor TensorBoard" in error_line(
        capsys, [str(tmp_path / "empty")])


def test_partial_last_line_of_a_killed_run_is_skipped(tmp_path, capsys):
    rows = curves.bai_rows(curves.healthy_lengths(), curves.healthy_rewards())
    path = curves.write_jsonl(tmp_path / "bai_metrics.jsonl", rows)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"step": 41, "bai/respo')  # no newline: the writer was killed
    run = run_json(capsys, str(path))["runs"][0]
    assert run["steps"] == 40 and run["name"] == tmp_path.name


def monitor_rows(path: Path, steps, lengths, rewards, state=None):
    """Run the real training-time BaiMonitor over the curves; returns its final state."""
    from bai_core.config import BaiConfig
    from bai_core.monitor import BaiMonitor
    from openrlhf_patches.experiences import batch_from_experiences

    mon = BaiMonitor(BaiConfig(), jsonl_path=str(path))
    if state is not None:
        mon.load_state_dict(json.loads(json.dumps(state)))  # as OpenRLHF's checkpoint does
    for step, n, r in zip(steps, lengths, rewards, strict=True):
        exp = SimpleNamespace(response_length=torch.full((4,), n), truncated=None,
                              info={"reward": torch.full((4,), r)}, sequences=None,
                              action_mask=None)
        mon.compute(batch_from_experiences([exp], []), step)
    return mon.state_dict()


def test_resumed_run_reports_the_original_onset(tmp_path, capsys):
    """Issue 10: the log of a resumed run starts collapsed; the report uses the logged state."""
    lengths, rewards = curves.collapse_lengths(), curves.dip_rewards()
    cut = 15  # stopped after step 15, resumed with --ckpt.load_enable
    state = monitor_rows(tmp_path / "first" / "bai_metrics.jsonl", curves.STEPS[:cut],
                         lengths[:cut], rewards[:cut])
    monitor_rows(tmp_path / "resumed" / "bai_metrics.jsonl", curves.STEPS[cut:],
                 lengths[cut:], rewards[cut:], state)
    whole = tmp_path / "whole.jsonl"
    whole.write_text((tmp_path / "first" / "bai_metrics.jsonl").read_text()
                     + (tmp_path / "resumed" / "bai_metrics.jsonl").read_text())
    full, resumed = run_json(capsys, str(whole), str(tmp_path / "resumed"))["runs"]
    assert resumed["first_step"] == cut + 1 and resumed["warnings"] == []
    for section in ("length_collapse", "reward_hockey_stick"):
        assert full[section]["detected"] and resumed[section]["detected"]
        assert full[section]["seeded_from_step"] is None
        assert resumed[section]["seeded_from_step"] == cut + 1
        assert full[section]["logged_agrees"] is True and resumed[section]["logged_agrees"]
        for key in ("onset_step", "min_step", "recovery_step"):
            assert resumed[section].get(key) == full[section].get(key), (section, key)
    assert resumed["length_collapse"]["onset_step"] <= cut  # before this log's first row
    assert resumed["length_collapse"]["min_ratio"] == pytest.approx(
        full["length_collapse"]["min_ratio"])
    assert resumed["reward_hockey_stick"]["depth"] == pytest.approx(
        full["reward_hockey_stick"]["depth"])
    assert report.main([str(tmp_path / "resumed")]) == 0
    assert "continued from the detector state logged at step 16" in capsys.readouterr().out


def test_a_log_starting_inside_a_logged_collapse_reports_it(tmp_path, capsys):
    """Issue 14: a log that carries the detector's flag but not its state (an older log, or
    one begun after a resume) starts collapsed; the run logged the collapse, so the report
    says detected, with the onset before the log's first row, and names its evidence."""
    lengths, rewards = curves.collapse_lengths(recover_at=None), curves.healthy_rewards()
    state = monitor_rows(tmp_path / "a.jsonl", curves.STEPS[:15], lengths[:15], rewards[:15])
    resumed = tmp_path / "resumed.jsonl"
    monitor_rows(resumed, curves.STEPS[15:], lengths[15:], rewards[15:], state)
    # a log without the detector state (e.g. written by an older bai): only the flags remain
    rows = [json.loads(line) for line in resumed.read_text().splitlines()]
    old = curves.write_jsonl(tmp_path / "old.jsonl", [
        {k: v for k, v in r.items() if not k.startswith("bai/detector/length_")
         or k == "bai/detector/length_collapse"} for r in rows])
    run = run_json(capsys, str(old))["runs"][0]
    lc = run["length_collapse"]
    assert lc["detected"] and lc["seeded_from_step"] is None
    assert lc["onset_step"] is None and lc["onset_before_step"] == 16 == run["first_step"]
    assert lc["recovery_step"] is None and lc["min_step"] >= 16
    assert "bai/detector/length_collapse = 1 at its first row (step 16)" in lc["detected_from"]
    assert lc["logged_agrees"] is True and run["warnings"] == []
    assert report.main([str(old)]) == 0
    captured = capsys.readouterr()
    assert "Sequence Length Collapse [bai/response_length/mean]: DETECTED before step 16" in (
        captured.out)
    assert "not recovered (from the run's own bai/detector/length_collapse" in captured.out
    assert "warning" not in captured.err


def test_logged_flags_that_disagree_with_the_replay_are_reported(tmp_path, capsys):
    """The run's own flags (default thresholds) against a replay with other thresholds."""
    log = tmp_path / "run.jsonl"
    monitor_rows(log, curves.STEPS, curves.collapse_lengths(), curves.healthy_rewards())
    capsys.readouterr()
    assert report.main(["--json", "-", str(log), "--collapse-drop", "0.9"]) == 0
    captured = capsys.readouterr()
    run = json.loads(captured.out)["runs"][0]
    lc = run["length_collapse"]
    assert not lc["detected"] and lc["seeded_from_step"] is None
    assert lc["logged_agrees"] is False and "detected_from" not in lc
    assert len(run["warnings"]) == 1
    warning = run["warnings"][0]
    assert "bai/detector/length_collapse = 1 at step" in warning
    assert "but this replay says 0" in warning and "logged steps disagree" in warning
    assert f"bai-report: warning: {warning}" in captured.err.splitlines()


def test_non_numeric_values_are_warned_once_per_key(tmp_path, capsys):
    rows = curves.bai_rows(curves.healthy_lengths(), curves.healthy_rewards())
    rows[3]["bai/reward/mean"] = "0.5"
    rows[7]["bai/reward/mean"] = "n/a"
    rows[9]["bai/response_length/mean"] = float("nan")
    rows[10]["bai/response_length/mean"] = None
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # NaN literal
    run = run_json(capsys, str(path))["runs"][0]
    assert sorted(run["warnings"]) == sorted([
        f"{path}: 'bai/reward/mean': 2 rows with a value that is not a finite number "
        "(string; first at line 4), ignored",
        f"{path}: 'bai/response_length/mean': 2 rows with a value that is not a finite number "
        "(nan, null; first at line 10), ignored",
    ])
    assert not run["length_collapse"]["detected"]
    assert report.main([str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("bai-report: warning: ") for line in err) == 2


def test_non_utf8_log_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"step": 1, "x": 1}\n{"step": 2, "caf\xe9": 1}\n')
    assert error_line(capsys, [str(path)]) == (
        f"bai-report: error: {path}:2: not UTF-8 text (invalid byte 0xe9 at byte 17 of the line)")


def test_max_onset_step_zero_means_any_step(tmp_path, capsys):
    late = [1000.0 if s < 30 else 200.0 for s in curves.STEPS]
    path = curves.write_jsonl(tmp_path / "late.jsonl", curves.bai_rows(late,
                                                                        curves.healthy_rewards()))
    for argv in ([], ["--collapse-max-onset-step", "0"], ["--collapse-max-onset-step", "31"]):
        lc = run_json(capsys, str(path), *argv)["runs"][0]["length_collapse"]
        assert lc["detected"] and lc["onset_step"] == 31, argv
    lc = run_json(capsys, str(path), "--collapse-max-onset-step", "30")["runs"][0]
    assert not lc["length_collapse"]["detected"]


@pytest.mark.parametrize(
    ("make_out", "needle"),
    [
        (lambda d: d / "report.txt", "must end in .png, got '.txt'"),
        (lambda d: d / "report", "must end in .png, got 'no suffix'"),
        (lambda d: d, "is a directory"),
        (lambda d: d / "afile" / "sub" / "r.png", "afile is not a directory"),
    ],
)
def test_bad_out_paths_fail_before_reading(logs, tmp_path, make_out, needle, capsys):
    (tmp_path / "afile").write_text("x")
    out = make_out(tmp_path)
    message = error_line(capsys, [str(logs["healthy"]), "--png", str(out)], status=2)
    assert message.startswith("bai-report: error: --png ") and needle in message


def test_out_creates_missing_parents(logs, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "r.PNG"
    assert report.main([str(logs["healthy"]), "--png", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_json_file_and_the_old_out_spelling(logs, tmp_path, capsys):
    """`--json FILE` writes the report (text summary on stdout); `--out` is `--png` for one
    release, with a warning; a `--json` target that is not .json (a run log) is refused."""
    out, fig = tmp_path / "r.json", tmp_path / "old.png"
    capsys.readouterr()
    assert report.main([str(logs["healthy"]), "--json", str(out), "--out", str(fig)]) == 0
    captured = capsys.readouterr()
    assert json.loads(out.read_text())["runs"][0]["steps"] == 40
    assert "Sequence Length Collapse" in captured.out
    assert "bai-report: warning: --out is deprecated" in captured.err
    assert fig.read_bytes()[:8] == PNG_MAGIC
    line = error_line(capsys, [str(logs["healthy"]), "--json", str(logs["dip"])], status=2)
    assert "must end in .json, got '.jsonl'" in line
    assert report.main([str(logs["healthy"]), "--json"]) == 0  # a bare --json prints it
    assert json.loads(capsys.readouterr().out)["runs"][0]["steps"] == 40
