"""Figure of a sweep probe: each metric against alpha, one line per weight set, inputs marked."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LOG = logging.getLogger(__name__)

# (title, [(series key, line style, suffix)]): a key is a metric in `metrics` or an entry key.
PANELS: list[tuple[str, list[tuple[str, str, str]]]] = [
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
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles: list[Any] = [Line2D([], [], color=colors[i % len(colors)], marker="o",
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
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    inputs = [e for e in report["entries"] if e["kind"] == "input"]
    choices = report.get("paper_choices", {})
    labels = list(series(report, "kl_to_reasoning"))
    for ax, (title, keys) in zip(axes.flat, PANELS, strict=True):
        drawn = False
        for key, style, _ in keys:
            lines = series(report, key)
            for label, (xs, ys) in lines.items():
                color = colors[labels.index(label) % len(colors)]
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
        ax.set_xlabel("alpha (base_weight)")
        ax.set_xlim(-0.03, 1.03)
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
    fig = sweep_figure(report)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    LOG.info("wrote %s", out)
    return out
