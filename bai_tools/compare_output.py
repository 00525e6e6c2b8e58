"""bai-compare's outputs: per-actor summaries (detector replay), JSON, markdown and figures."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bai_core.events import replay
from bai_tools.runlog import RunLog

LOG = logging.getLogger(__name__)
KL_KEYS = ("bai/kl/mean", "kl", "rollout/kl", "policy/kl")
_BUCKET = re.compile(r"^bai/reward_by_length/(\d+)-(\d+)/(mean|count)$")


def _last(run: RunLog, curve: str) -> float | None:
    _, values = run.curve(curve)
    return values[-1] if values else None


def _first(run: RunLog, curve: str) -> float | None:
    _, values = run.curve(curve)
    return values[0] if values else None


def kl_curve(run: RunLog) -> tuple[str | None, list[int], list[float]]:
    """The KL the run logged (the bai hooks' per-response KL first), or (None, [], [])."""
    for key in KL_KEYS:
        series = run.series.get(key)
        if series:
            items = sorted(series.items())
            return key, [s for s, _ in items], [v for _, v in items]
    return None, [], []


def summarize_run(run: RunLog, params: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Detector summaries (bai_core.events.replay, as bai-report) and the curves' end points."""
    events = replay(run, params)
    lc, hs = events["length_collapse"], events["reward_hockey_stick"]
    if "recovered_step" not in lc:  # the core's summaries name it recovery_step
        lc = {**lc, "recovered_step": lc.get("recovery_step")}
    return {
        "steps": len(run.steps),
        "length_collapse": {k: lc.get(k) for k in ("detected", "onset_step", "min_ratio",
                                                   "min_step", "recovered_step")},
        "reward_hockey_stick": {k: hs.get(k) for k in ("detected", "onset_step", "min_step",
                                                       "depth", "recovery_step",
                                                       "steps_to_recover")},
        "collapse_detected": lc["detected"],
        "collapse_onset_step": lc["onset_step"],
        "min_length_ratio": lc["min_ratio"],
        "collapse_recovered": lc["recovered_step"] is not None if lc["detected"] else None,
        "reward_dip_detected": hs["detected"],
        "reward_dip_depth": hs["depth"],
        "reward_dip_recovered": hs["recovery_step"] is not None if hs["detected"] else None,
        "initial_length": _first(run, "length_mean"),
        "final_length": _last(run, "length_mean"),
        "initial_reward": _first(run, "reward_mean"),
        "final_reward": _last(run, "reward_mean"),
        "final_think_closed": _last(run, "think_closed"),
        "kl_key": kl_curve(run)[0],
        "warnings": [*run.warnings, *(e["disagreement"] for e in events.values()
                                      if e.get("disagreement"))],
    }


NUMERIC = ("initial_length", "final_length", "initial_reward", "final_reward",
           "final_think_closed", "min_length_ratio", "reward_dip_depth", "heldout_accuracy",
           "collapse_onset_step")
FLAGS = ("collapse_detected", "collapse_recovered", "reward_dip_detected",
         "reward_dip_recovered")


def aggregate(name: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One actor over its runs (one per seed): a single run as it is; several: every numeric
    summary as its mean with `<key>_min` / `<key>_max`, every yes/no as the count of yes
    (`<key>_count`, of `n_runs`), over the finished runs; a failed run makes the actor failed."""
    if len(runs) == 1:
        return {**runs[0], "name": name, "seeds": [runs[0].get("seed")], "n_runs": 1,
                "runs": [runs[0]["name"]]}
    done = [r for r in runs if r["ok"]]
    entry: dict[str, Any] = {
        "name": name, "actor": runs[0]["actor"], "ok": len(done) == len(runs),
        "error": "; ".join(f"{r['name']}: {r['error']}" for r in runs if not r["ok"]) or None,
        "seeds": [r.get("seed") for r in runs], "n_runs": len(runs), "n_ok": len(done),
        "runs": [r["name"] for r in runs], "steps": min((r["steps"] for r in done), default=0)}
    for key in NUMERIC:
        values = [r[key] for r in done if isinstance(r.get(key), int | float)
                  and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
        entry[key] = sum(values) / len(values) if values else None
        entry[f"{key}_min"] = min(values) if values else None
        entry[f"{key}_max"] = max(values) if values else None
    for key in FLAGS:
        entry[f"{key}_count"] = sum(1 for r in done if r.get(key) is True)
    entry["collapse_detected"] = entry["collapse_detected_count"] > 0 if done else None
    return entry


def _fmt(value: Any, spec: str = "{:.3f}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, int):
        return str(value)
    return spec.format(value)


MD_COLUMNS: list[tuple[str, str, str]] = [
    ("status", "status", ""),
    ("steps", "steps", ""),
    ("collapse", "collapse_detected", ""),
    ("onset", "collapse_onset_step", ""),
    ("min length ratio", "min_length_ratio", "{:.2f}"),
    ("recovered", "collapse_recovered", ""),
    ("reward dip depth", "reward_dip_depth", "{:.3f}"),
    ("dip recovered", "reward_dip_recovered", ""),
    ("length first/last", "length", ""),
    ("reward first/last", "reward", ""),
    ("held-out acc", "heldout_accuracy", "{:.3f}"),
]


def _cell(e: Mapping[str, Any], key: str, spec: str) -> str:
    """A value; over several seeds the mean and (min-max), a yes/no as `k/n`."""
    n = e.get("n_runs", 1)
    if n > 1 and f"{key}_count" in e:
        return f"{e[f'{key}_count']}/{e.get('n_ok', n)}"
    text = _fmt(e.get(key), spec or "{}")
    if n > 1 and e.get(f"{key}_min") is not None and text != "-":
        text += f" ({_fmt(e[f'{key}_min'], spec or '{}')}-{_fmt(e[f'{key}_max'], spec or '{}')})"
    return text


def markdown_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """One row per actor; a failed run keeps its row with the reason. An actor run over several
    seeds shows each value as mean (min-max) and each yes/no as how many of its runs."""
    multi = any(e.get("n_runs", 1) > 1 for e in entries)
    columns = [("seeds", "seeds", ""), *MD_COLUMNS] if multi else MD_COLUMNS
    head = "| actor | " + " | ".join(c[0] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for e in entries:
        cells = []
        for _, key, spec in columns:
            if key == "status":
                cells.append("ok" if e["ok"] else f"FAILED: {e.get('error') or '?'}")
            elif key == "seeds":
                cells.append(",".join(str(x) for x in e.get("seeds") or []) or "-")
            elif key == "length":
                cells.append(f"{_cell(e, 'initial_length', '{:.1f}')} / "
                             f"{_cell(e, 'final_length', '{:.1f}')}")
            elif key == "reward":
                cells.append(f"{_cell(e, 'initial_reward', '{:.3f}')} / "
                             f"{_cell(e, 'final_reward', '{:.3f}')}")
            else:
                cells.append(_cell(e, key, spec))
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append(f"| {e['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return out


def _series(run: RunLog, curve: str) -> tuple[str, list[int], list[float]]:
    """(label suffix, steps, values) of one curve; the KL panel takes what the run logged."""
    if curve == "kl":
        key, steps, values = kl_curve(run)
        return (f" ({key})" if key else ""), steps, values
    steps, values = run.curve(curve)
    return "", steps, values


def mean_band(runs: Sequence[RunLog], curve: str) -> tuple[list[int], list[float], list[float],
                                                           list[float]]:
    """Over several runs: the steps all of them logged, and per step the mean, min and max."""
    series = [dict(zip(*_series(run, curve)[1:], strict=True)) for run in runs]
    steps = sorted(set.intersection(*(set(d) for d in series))) if series else []
    values = [[d[s] for d in series] for s in steps]
    return (steps, [sum(v) / len(v) for v in values], [min(v) for v in values],
            [max(v) for v in values])


def plot_overlay(groups: Sequence[tuple[str, Sequence[RunLog], Sequence[Mapping[str, Any]]]],
                 out: Path) -> Path:
    """The paper's curves, one line per actor: mean response length (collapse onset marked),
    reward (dip onset marked), </think> close rate and, when logged, the KL. An actor trained
    over several seeds is its mean curve with the min-max band of its runs."""
    from bai_tools.plots import MARKS

    plt = _plt()
    panels = [("length_mean", "mean response length (tokens)", "length_collapse"),
              ("reward_mean", "reward (mean)", "reward_hockey_stick"),
              ("think_closed", "</think> closed ratio", ""), ("kl", "KL", "")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (curve, title, section) in zip(axes, panels, strict=True):
        drawn = False
        for index, (name, runs, summaries) in enumerate(groups):
            color = colors[index % len(colors)]
            if len(runs) > 1:
                steps, mean, lo, hi = mean_band(runs, curve)
                if steps:
                    drawn = True
                    suffix = _series(runs[0], curve)[0]
                    ax.plot(steps, mean, color=color, lw=1.5,
                            label=f"{name}{suffix}: mean of {len(runs)} seeds")
                    ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)
                continue
            run, summary = runs[0], summaries[0]
            suffix, steps, values = _series(run, curve)
            if not steps:
                continue
            drawn = True
            ax.plot(steps, values, color=color, lw=1.5, marker=".", label=name + suffix)
            event = summary.get(section) if section else None
            if not event or not event.get("detected"):
                continue
            for key, marker, mark_label in MARKS[section]:
                step = event.get(key)
                if step is not None and step in steps:
                    ax.plot([step], [values[steps.index(step)]], marker=marker, color=color,
                            ms=9, ls="none", label=f"{name}: {mark_label} @ {step}")
        ax.set_ylabel(title, fontsize=9)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="grey")
    axes[-1].set_xlabel("training step")
    fig.suptitle("bai-compare: " + ", ".join(name for name, _, _ in groups))
    return _save(fig, out)


def reward_by_length(run: RunLog) -> dict[tuple[int, int], tuple[float, float, float]]:
    """Per length bucket [lo, hi): (count over all steps, count-weighted mean reward over all
    steps, mean reward at the last step that had responses there; NaN when none)."""
    buckets: dict[tuple[int, int], dict[str, dict[int, float]]] = {}
    for key, series in run.series.items():
        m = _BUCKET.match(key)
        if m:
            buckets.setdefault((int(m[1]), int(m[2])), {})[m[3]] = series
    out = {}
    for bucket, parts in sorted(buckets.items()):
        counts, means = parts.get("count", {}), parts.get("mean", {})
        total = sum(counts.values())
        if not total:
            continue
        weighted = sum(means[s] * counts.get(s, 0) for s in means)
        last = [s for s in sorted(means) if counts.get(s, 0) > 0]
        out[bucket] = (total, weighted / total if means else math.nan,
                       means[last[-1]] if last else math.nan)
    return out


def pooled_buckets(runs: Sequence[RunLog]) -> dict[tuple[int, int], tuple[float, float, float]]:
    """reward_by_length over several runs (seeds): counts summed, means count-weighted."""
    parts = [reward_by_length(run) for run in runs]
    out = {}
    for bucket in sorted(set().union(*parts)):
        rows = [p[bucket] for p in parts if bucket in p]
        total = sum(r[0] for r in rows)
        last = [r for r in rows if math.isfinite(r[2])]
        out[bucket] = (total, sum(r[0] * r[1] for r in rows) / total,
                       sum(r[0] * r[2] for r in last) / sum(r[0] for r in last) if last
                       else math.nan)
    return out


def plot_buckets(groups: Sequence[tuple[str, Sequence[RunLog]]], out: Path) -> Path:
    """The reward-by-response-length view (the paper's 100-token buckets): mean reward per
    bucket over the whole run and at its last step, and how many responses fell there (an
    actor's seeds pooled)."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for index, (name, runs) in enumerate(groups):
        data = pooled_buckets(runs)
        if not data:
            continue
        drawn = True
        color = colors[index % len(colors)]
        mids = [(lo + hi) / 2 for lo, hi in data]
        top.plot(mids, [v[1] for v in data.values()], color=color, marker="o",
                 label=f"{name}: all steps")
        top.plot(mids, [v[2] for v in data.values()], color=color, marker="x", ls="--",
                 label=f"{name}: last step")
        bottom.plot(mids, [v[0] for v in data.values()], color=color, marker="o", label=name)
    top.set_ylabel("mean reward")
    bottom.set_ylabel("responses (all steps)")
    bottom.set_xlabel("response length bucket (tokens, midpoint)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    if not drawn:
        top.text(0.5, 0.5, "no bai/reward_by_length keys logged", transform=top.transAxes,
                 ha="center", color="grey")
    fig.suptitle("bai-compare: reward by response length")
    return _save(fig, out)
