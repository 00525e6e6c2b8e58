"""Matplotlib (Agg) figures: candidates (bai-probe), training curves (bai-report), and the
metrics of a sweep against alpha (bai-sweep-probe)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from bai_tools.runlog import RunLog  # noqa: E402

LOG = logging.getLogger(__name__)


COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig: Any, out: Path) -> Path:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    LOG.info("wrote %s", out)
    return out


def plot_probe(report: Mapping[str, Any], out: Path) -> Path:
    """Bars per candidate: length (p10-p90), clip / think closure, think vs answer, reward."""
    cands = report["candidates"]
    names = [c["name"] for c in cands]
    x = list(range(len(cands)))

    def metric(key: str) -> list[float]:
        return [float(c["metrics"].get(key, float("nan"))) for c in cands]

    fig, axes = plt.subplots(1, 4, figsize=(4.2 * 4, 4.2))
    mean, p10, p90 = (metric(f"bai/response_length/{k}") for k in ("mean", "p10", "p90"))
    err = [[max(m - lo, 0) for m, lo in zip(mean, p10, strict=True)],
           [max(hi - m, 0) for m, hi in zip(mean, p90, strict=True)]]
    axes[0].bar(x, mean, yerr=err, capsize=4, color="tab:blue")
    axes[0].axhline(report["settings"]["max_tokens"], ls="--", c="grey", lw=1, label="max_tokens")
    axes[0].set(title="response length (mean, p10-p90)", ylabel="tokens")
    axes[0].legend(loc="lower right", fontsize=8)

    width = 0.38
    axes[1].bar([i - width / 2 for i in x], metric("bai/response_length/clip_ratio"), width,
                label="clip ratio", color="tab:red")
    axes[1].bar([i + width / 2 for i in x], metric("bai/think/closed_ratio"), width,
                label="</think> closed", color="tab:green")
    axes[1].set(ylim=(0, 1.05), title="clip ratio / think closure")
    axes[1].legend(fontsize=8)

    think, answer = metric("bai/think/think_length_mean"), metric("bai/think/answer_length_mean")
    axes[2].bar(x, think, label="think", color="tab:purple")
    axes[2].bar(x, answer, bottom=think, label="answer", color="tab:orange")
    axes[2].set_title("think vs answer length (mean)")
    if all(t != t for t in think):
        axes[2].text(0.5, 0.5, "no single-token </think>", transform=axes[2].transAxes,
                     ha="center", color="grey")
    axes[2].legend(fontsize=8)

    reward = metric("bai/reward/mean")
    axes[3].bar(x, [0.0 if r != r else r for r in reward], color="tab:cyan")
    for i, (r, c) in enumerate(zip(reward, cands, strict=True)):
        axes[3].text(i, 0 if r != r else r, "n/a" if r != r else f"{r:.2f}\n(n={c['num_scored']})",
                     ha="center", va="bottom", fontsize=8)
    finite = [r for r in reward if r == r]
    axes[3].set(ylim=(min([0.0, *finite]), max([1.05, *(1.1 * r for r in finite)])),
                title="math reward (mean)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, ha="right")
    s = report["settings"]
    fig.suptitle(
        f"bai-probe: {report['prompts']['count']} prompts x n={s['n']}, "
        f"temperature {s['temperature']}, top_p {s['top_p']}, max_tokens {s['max_tokens']}",
        y=1.03,
    )
    return _save(fig, out)


PANELS: list[tuple[str, str, str]] = [
    ("length_mean", "response length (tokens)", "length_collapse"),
    ("clip_ratio", "clip ratio", ""),
    ("think_closed", "</think> closed ratio", ""),
    ("reward_mean", "reward (mean)", "reward_hockey_stick"),
]
MARKS: dict[str, list[tuple[str, str, str]]] = {  # bai-compare marks its runs the same way
    section: [("onset_step", "v", onset), ("min_step", "x", "minimum"),
              ("recovery_step", "^", "recovered")]
    for section, onset in (("length_collapse", "collapse onset"),
                           ("reward_hockey_stick", "dip onset"))}


def plot_report(
    runs: Sequence[RunLog], events: Sequence[Mapping[str, Any]], out: Path
) -> Path:
    """Training curves of several runs overlaid, with detected onset/minimum/recovery marked."""
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 2.6 * len(PANELS)), sharex=True)
    for ax, (curve, title, section) in zip(axes, PANELS, strict=True):
        drawn = False
        for index, (run, ev) in enumerate(zip(runs, events, strict=True)):
            color = COLORS[index % len(COLORS)]
            steps, values = run.curve(curve)
            if not steps:
                continue
            drawn = True
            ax.plot(steps, values, color=color, lw=1.5, label=run.name)
            if curve == "length_mean":
                lo_s, lo = run.curve("length_p10")
                hi_s, hi = run.curve("length_p90")
                if lo_s and lo_s == hi_s:
                    ax.fill_between(lo_s, lo, hi, color=color, alpha=0.15, lw=0)
            if not section or not ev[section].get("detected"):
                continue
            for key, marker, label in MARKS[section]:
                step = ev[section].get(key)
                if step is None:
                    continue
                ax.axvline(step, color=color, ls=":", lw=1)
                nearest = min(range(len(steps)), key=lambda i: abs(steps[i] - step))
                ax.plot([step], [values[nearest]], marker=marker, color=color, ms=9, ls="none",
                        label=f"{run.name}: {label} @ {step}")
        ax.set_ylabel(title, fontsize=9)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="grey")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.suptitle("bai-report: " + ", ".join(r.name for r in runs))
    return _save(fig, out)


# (title, [(series key, line style, suffix)]): a key is a metric in `metrics` or an entry key.
SWEEP_PANELS: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("response length, tokens (mean, p10-p90)", [("bai/response_length/mean", "-", "")]),
    ("clip ratio", [("bai/response_length/clip_ratio", "-", "")]),
    ("</think> closed ratio", [("bai/think/closed_ratio", "-", "")]),
    ("think / answer length (mean)", [("bai/think/think_length_mean", "-", " think"),
                                      ("bai/think/answer_length_mean", "--", " answer")]),
    ("math reward (mean)", [("bai/reward/mean", "-", "")]),
    ("KL to the reasoning model (nats/token)", [("kl_from_reasoning", "-", " KL(R||C)"),
                                                ("kl_to_reasoning", "--", " KL(C||R)")]),
]
INPUT_STYLES = {"base": ":", "sft": "-.", "reasoning": "-"}


def entry_value(entry: Mapping[str, Any], key: str) -> float:
    """A metric of one entry (NaN where it was not measured)."""
    value = entry.get(key) if key in entry else entry["metrics"].get(key)
    return math.nan if value is None else float(value)


def series(report: Mapping[str, Any], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """{weight-set label: (alphas, values)} over the candidates, sorted by alpha."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for entry in report["entries"]:
        if entry["kind"] == "candidate":
            lines.setdefault(entry["weight_set"], []).append(
                (float(entry["base_weight"]), entry_value(entry, key)))
    return {label: ([a for a, _ in sorted(pts)], [v for _, v in sorted(pts)])
            for label, pts in lines.items()}


def _legend_handles(report: Mapping[str, Any], labels: list[str]) -> list[Any]:
    """Figure-level legend: weight sets (colour), inputs (black line styles), paper marks."""
    handles: list[Any] = [Line2D([], [], color=COLORS[i % len(COLORS)], marker="o",
                                label=f"candidates {label}") for i, label in enumerate(labels)]
    handles += [Line2D([], [], color="black", alpha=0.6, ls=INPUT_STYLES.get(e["role"], ":"),
                       label=f"input {e['name']} ({e['role']})")
                for e in report["entries"] if e["kind"] == "input"]
    handles.append(Line2D([], [], color="grey", ls="--", label="max_tokens"))
    choices = report.get("paper_choices", {})
    for alpha in choices.get("best_benchmarks", []):
        handles.append(Line2D([], [], color="tab:red", label=f"paper: best benchmarks "
                              f"(alpha={alpha:g})"))
    stable = choices.get("most_stable", [])
    if stable:
        handles.append(Patch(color="tab:green", alpha=0.15, label="paper: most stable (alpha="
                             + "-".join(f"{a:g}" for a in stable) + ")"))
    return handles


def sweep_figure(report: Mapping[str, Any]) -> Figure:
    """The 2 x 3 panel figure. Each candidate line carries gid `series:<weight set>:<key>`
    and has one point per alpha of its weight set."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    inputs = [e for e in report["entries"] if e["kind"] == "input"]
    choices = report.get("paper_choices", {})
    labels = list(series(report, "kl_to_reasoning"))
    for ax, (title, keys) in zip(axes.flat, SWEEP_PANELS, strict=True):
        drawn = False
        for key, style, _ in keys:
            lines = series(report, key)
            for label, (xs, ys) in lines.items():
                color = COLORS[labels.index(label) % len(COLORS)]
                ax.plot(xs, ys, ls=style, marker="o", color=color, gid=f"series:{label}:{key}")
                drawn = drawn or any(y == y for y in ys)
                if key == "bai/response_length/mean":
                    _, lo = series(report, "bai/response_length/p10")[label]
                    _, hi = series(report, "bai/response_length/p90")[label]
                    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
            for entry in inputs:
                value = entry_value(entry, key)
                if value == value:
                    ax.axhline(value, color="black", lw=1, alpha=0.6,
                               ls=INPUT_STYLES.get(entry["role"], ":"))
        if keys[0][0] == "bai/response_length/mean":
            ax.axhline(report["settings"]["max_tokens"], color="grey", lw=1, ls="--")
        for alpha in choices.get("best_benchmarks", []):
            ax.axvline(alpha, color="tab:red", lw=1.2, alpha=0.7)
        stable = choices.get("most_stable", [])
        if stable:
            ax.axvspan(min(stable) - 0.01, max(stable) + 0.01, color="tab:green", alpha=0.15)
        if len(keys) > 1:  # which line style is which quantity
            ax.legend(handles=[Line2D([], [], color="grey", ls=style, label=suffix.strip())
                               for _, style, suffix in keys], fontsize=8, loc="best")
        if not drawn:
            why = "n/a: no single-token </think>" if keys[0][0].startswith("bai/think/") else "n/a"
            ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", color="grey")
        ax.set_title(title, fontsize=10)
        ax.set(xlabel="alpha (base_weight)", xlim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    s = report["settings"]
    fig.suptitle(
        f"bai-sweep-probe: {report['prompts']['count']} prompts x n={s['n']}, "
        f"temperature {s['temperature']}, max_tokens {s['max_tokens']}, seed {s['seed']}; "
        f"reasoning model: {report['reasoning']['name']}"
    )
    fig.legend(handles=_legend_handles(report, labels), loc="lower center", ncol=4, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_sweep_probe(report: Mapping[str, Any], out: Path) -> Path:
    """Write the sweep figure as a PNG."""
    return _save(sweep_figure(report), out)
