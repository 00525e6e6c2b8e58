"""Replay of logged curves: a log that starts inside an episode the run itself logged."""

from __future__ import annotations

from pathlib import Path

from bai_core.events import replay
from bai_tools.runlog import RunLog

COLLAPSED = [12.0, 11.0, 10.0, 10.0, 11.0, 24.0, 29.0]  # steps 8..14, after a resume


def log(flags: list[float] | None, with_state: bool = False) -> RunLog:
    run = RunLog("resumed", Path("resumed/bai_metrics.jsonl"), "jsonl")
    steps = list(range(8, 8 + len(COLLAPSED)))
    run.series["bai/response_length/mean"] = dict(zip(steps, COLLAPSED, strict=True))
    run.series["bai/reward/mean"] = {s: 1.0 for s in steps}
    if flags is not None:
        run.series["bai/detector/length_collapse"] = dict(zip(steps, flags, strict=True))
        run.series["bai/detector/length_ratio_smoothed"] = {
            s: v / 30.0 for s, v in zip(steps, COLLAPSED, strict=True)}
    if with_state:
        run.series["bai/detector/length_baseline"] = {8: 30.0}
        run.series["bai/detector/length_smoothed"] = {8: 12.0}
        run.series["bai/detector/length_onset_step"] = {8: 5.0}
    return run


def test_a_log_starting_inside_a_logged_collapse_reports_it_detected():
    flags = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    lc = replay(log(flags))["length_collapse"]
    assert lc["detected"] is True
    assert lc["onset_step"] is None and lc["onset_before_step"] == 8
    assert "bai/detector/length_collapse = 1 at its first row (step 8)" in lc["detected_from"]
    assert lc["recovery_step"] == 14  # where the run's own flag went back to 0
    assert lc["min_step"] == 10 and abs(lc["min_ratio"] - 10.0 / 30.0) < 1e-9
    assert "disagreement" not in lc and lc["warnings"] == []


def test_without_the_flag_the_fresh_replay_still_decides():
    lc = replay(log(None))["length_collapse"]
    assert lc["detected"] is False and "onset_before_step" not in lc
    quiet = replay(log([0.0] * len(COLLAPSED)))["length_collapse"]
    assert quiet["detected"] is False and quiet["logged_agrees"] is True


def test_a_full_logged_state_is_continued_not_guessed():
    lc = replay(log([1.0] * len(COLLAPSED), with_state=True))["length_collapse"]
    assert lc["seeded_from_step"] == 8 and lc["onset_step"] == 5
    assert "onset_before_step" not in lc
