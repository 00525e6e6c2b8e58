"""Detectors fire at the right step on collapse/dip curves, stay silent on healthy/noisy runs."""

import json
import random

import pytest

from bai_core.detectors import LengthCollapseDetector, RewardHockeyStickDetector


def feed(det, values, start=1):
    fired = {}
    for i, v in enumerate(values, start=start):
        msgs = det.update(i, v)
        if msgs:
            fired[i] = msgs
    return fired


COLLAPSE = [1000, 1000, 1000, 300, 300, 300, 300, 400, 600, 900, 1000, 1000, 1000]


def test_length_collapse_onset_min_and_recovery():
    det = LengthCollapseDetector(collapse_drop=0.5, baseline_steps=3, ema=0.5)
    fired = feed(det, COLLAPSE)
    # smoothed: step4 650 (0.65), step5 475 (0.475 < 0.5) -> onset 5
    s = det.summary()
    assert s["detected"] is True
    assert s["onset_step"] == 5
    assert s["min_step"] == 7  # 475 -> 387.5 -> 343.75 -> (step 8) 371.9
    assert s["min_ratio"] == pytest.approx(0.34375)
    # recovery at smoothed >= 900: 8: 371.9, 9: 485.9, 10: 693.0, 11: 846.5, 12: 923.2
    assert s["recovery_step"] == 12
    assert sorted(fired) == [5, 12]
    assert "Collapse" in fired[5][0] and "recovered" in fired[12][0]
    json.dumps(s)


def test_length_collapse_never_recovers():
    det = LengthCollapseDetector()
    feed(det, [800, 820, 780] + [200] * 30)
    s = det.summary()
    assert s["detected"] and s["recovery_step"] is None
    assert s["min_ratio"] == pytest.approx(0.25, rel=1e-3)
    assert det.active


def test_length_healthy_growth_and_noise_silent():
    rng = random.Random(0)
    det = LengthCollapseDetector()
    healthy = [1000 + 10 * t + rng.gauss(0, 80) for t in range(200)]
    assert feed(det, healthy) == {}
    assert det.summary()["detected"] is False
    noisy = LengthCollapseDetector()
    assert feed(noisy, [1000 * (1 + rng.uniform(-0.3, 0.3)) for _ in range(500)]) == {}


def test_length_immediate_and_late_onset_ignored():
    det = LengthCollapseDetector(ema=1.0)
    fired = feed(det, [100, 100, 100, 49])
    assert list(fired) == [4]
    late = LengthCollapseDetector(ema=1.0, collapse_max_onset_step=5)
    assert feed(late, [100] * 10 + [10] * 5) == {}
    assert late.summary()["detected"] is False
    in_time = LengthCollapseDetector(ema=1.0, collapse_max_onset_step=11)
    assert list(feed(in_time, [100] * 10 + [10] * 5)) == [11]


@pytest.mark.parametrize("any_step", [0, None])
def test_max_onset_step_zero_means_any_step(any_step):
    det = LengthCollapseDetector(ema=1.0, collapse_max_onset_step=any_step)
    assert det.max_onset_step == 0
    assert list(feed(det, [100] * 50 + [10])) == [51]


def test_baseline_steps_are_not_judged():
    det = LengthCollapseDetector(ema=1.0)
    assert feed(det, [1000, 10, 1000]) == {}  # dips inside the baseline window


def test_nonfinite_values_ignored():
    det = LengthCollapseDetector()
    assert feed(det, [100, float("nan"), 100, float("inf"), 100, 100]) == {}
    assert det.baseline == 100


DIP = [0.50, 0.52, 0.48, 0.40, 0.30, 0.25, 0.25, 0.30, 0.40, 0.50, 0.60, 0.65, 0.65]


def test_reward_hockey_stick_dip_and_recovery():
    det = RewardHockeyStickDetector(baseline_steps=3, reward_dip_std=2.0, reward_dip_rel=0.10,
                                    ema=0.5)
    fired = feed(det, DIP)
    s = det.summary()
    # baseline 0.5, std 0.02 -> margin max(0.04, 0.05) = 0.05, threshold 0.45
    # smoothed: 3: 0.495; 4: 0.4475 (< 0.45) onset; 5: 0.37375; 6: 0.311875; 7: 0.2809375;
    # 8: 0.29046875 -> minimum at step 7
    assert s["onset_step"] == 4
    assert s["min_step"] == 7
    assert s["depth"] == pytest.approx(0.5 - 0.2809375, abs=1e-9)
    assert s["rel_depth"] == pytest.approx(0.438125, abs=1e-9)
    # 9: 0.3452 10: 0.4226 11: 0.5113 >= 0.5 -> recovery 11
    assert s["recovery_step"] == 11
    assert s["steps_to_recover"] == 7
    assert sorted(fired) == [4, 11]
    json.dumps(s)


def test_reward_healthy_and_noise_silent():
    rng = random.Random(1)
    det = RewardHockeyStickDetector()
    assert feed(det, [0.3 + 0.001 * t + rng.gauss(0, 0.01) for t in range(300)]) == {}
    det2 = RewardHockeyStickDetector()
    assert feed(det2, [0.5 + rng.gauss(0, 0.02) for _ in range(500)]) == {}
    s = det2.summary()
    assert s["detected"] is False and s["depth"] == 0.0 and s["steps_to_recover"] is None


def test_reward_zero_std_baseline_needs_relative_drop():
    det = RewardHockeyStickDetector(ema=1.0)
    assert feed(det, [1.0, 1.0, 1.0, 0.95, 0.92]) == {}  # < 10 % drop: silent despite std 0
    assert list(feed(det, [0.85], start=6)) == [6]


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 8, 11])
def test_state_round_trip_mid_run(cut):
    full_l, full_r = LengthCollapseDetector(), RewardHockeyStickDetector()
    ref_l, ref_r = feed(full_l, COLLAPSE), feed(full_r, DIP)
    a_l, a_r = LengthCollapseDetector(), RewardHockeyStickDetector()
    got_l, got_r = feed(a_l, COLLAPSE[:cut]), feed(a_r, DIP[:cut])
    b_l, b_r = LengthCollapseDetector(), RewardHockeyStickDetector()
    b_l.load_state_dict(json.loads(json.dumps(a_l.state_dict())))
    b_r.load_state_dict(json.loads(json.dumps(a_r.state_dict())))
    got_l.update(feed(b_l, COLLAPSE[cut:], start=cut + 1))
    got_r.update(feed(b_r, DIP[cut:], start=cut + 1))
    assert got_l == ref_l and got_r == ref_r
    assert b_l.summary() == full_l.summary()
    assert b_r.summary() == full_r.summary()


@pytest.mark.parametrize(
    ("cls", "kwargs", "needle"),
    [
        (LengthCollapseDetector, {"collapse_drop": 1.5},
         "--collapse-drop must be in (0, 1), got 1.5"),
        (LengthCollapseDetector, {"collapse_drop": 0.0},
         "--collapse-drop must be in (0, 1), got 0.0"),
        (LengthCollapseDetector, {"collapse_drop": float("nan")},
         "--collapse-drop must be a finite number"),
        (LengthCollapseDetector, {"collapse_recover": 0.0},
         "--collapse-recover must be in (0, 1], got 0.0"),
        (LengthCollapseDetector, {"collapse_recover": 1.2},
         "--collapse-recover must be in (0, 1], got 1.2"),
        (LengthCollapseDetector, {"collapse_drop": 0.2, "collapse_recover": 0.7},
         "--collapse-recover must be >= 1 - --collapse-drop"),
        (LengthCollapseDetector, {"baseline_steps": 0}, "--baseline-steps must be >= 1, got 0"),
        (LengthCollapseDetector, {"baseline_steps": 2.5}, "--baseline-steps must be an integer"),
        (LengthCollapseDetector, {"collapse_max_onset_step": -1},
         "--collapse-max-onset-step must be >= 0"),
        (LengthCollapseDetector, {"ema": float("inf")}, "--ema must be a finite number, got inf"),
        (RewardHockeyStickDetector, {"ema": 0.0}, "--ema must be in (0, 1]"),
        (RewardHockeyStickDetector, {"reward_dip_std": -1.0},
         "--reward-dip-std must be >= 0, got -1.0"),
        (RewardHockeyStickDetector, {"reward_dip_rel": float("nan")},
         "--reward-dip-rel must be a finite"),
        (RewardHockeyStickDetector, {"reward_dip_abs": "0.1"},
         "--reward-dip-abs must be a number, got '0.1'"),
        (RewardHockeyStickDetector, {"baseline_steps": True}, "--baseline-steps must be a number"),
    ],
)
def test_invalid_parameters(cls, kwargs, needle):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert needle in str(info.value)


def test_recover_equal_to_one_minus_drop_is_allowed():
    det = LengthCollapseDetector(collapse_drop=0.5, collapse_recover=0.5, ema=1.0)
    fired = feed(det, [100, 100, 100, 40, 50])
    assert sorted(fired) == [4, 5]


def _continue_from_log(cls, values, cut):
    """Detector A runs `cut` steps; B continues from A's logged_state as a report would."""
    a = cls()
    feed(a, values[:cut])
    logged = json.loads(json.dumps(a.logged_state()))  # what a JSONL row carries
    assert all(isinstance(v, float) for v in logged.values())
    b = cls()
    assert b.load_logged_state(logged) is (a.baseline is not None)
    if a.baseline is None:
        b = cls()
        feed(b, values[:cut])
    fired = feed(b, values[cut:], start=cut + 1)
    return b, fired


@pytest.mark.parametrize("cut", [3, 4, 5, 7, 9, 12])
def test_logged_state_continues_like_the_full_run(cut):
    for cls, values in ((LengthCollapseDetector, COLLAPSE), (RewardHockeyStickDetector, DIP)):
        full = cls()
        ref = feed(full, values)
        b, fired = _continue_from_log(cls, values, cut)
        assert fired == {s: m for s, m in ref.items() if s > cut}
        got, want = b.summary(), full.summary()
        for key in want:
            assert got[key] == pytest.approx(want[key]), (cls.__name__, cut, key)


def test_logged_state_keys_and_unknowns_left_out():
    det = LengthCollapseDetector()
    assert det.logged_state() == {}
    feed(det, [1000, 1000])
    assert set(det.logged_state()) == {"smoothed"}  # baseline not complete yet
    assert det.load_logged_state({"smoothed": 1000.0}) is False
    feed(det, COLLAPSE[2:6], start=3)
    assert set(det.logged_state()) == {"baseline", "smoothed", "onset_step", "min_ratio",
                                       "min_step"}
    rew = RewardHockeyStickDetector()
    feed(rew, DIP)
    assert set(rew.logged_state()) == {"baseline", "baseline_std", "smoothed", "onset_step",
                                       "min", "min_step", "recovery_step"}
    assert rew.logged_state()["baseline_std"] == pytest.approx(0.02)
