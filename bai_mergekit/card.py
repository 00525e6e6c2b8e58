"""The BAI section of the model card: method, paper, ratios and config source."""

from __future__ import annotations

from typing import Any

from mergekit.config import MergeConfiguration

from bai_mergekit.method import PAPER_URL
from bai_mergekit.preflight import MergePlan


def _scalar(setting: Any) -> float | None:
    if isinstance(setting, (int, float)) and not isinstance(setting, bool):
        return float(setting)
    return None


def ratio_summary(config: MergeConfiguration) -> dict[str, Any]:
    """alpha, stage-1 weights and the folded per-model coefficients (None where per-layer)."""
    params = config.parameters or {}
    alpha_setting = params.get("base_weight", 0.5)
    normalize = params.get("normalize", True)
    if not isinstance(normalize, bool):  # pre-flight refuses this; never guess from a string
        raise TypeError(f"normalize must be a boolean, got {normalize!r}")
    weights = {
        str(m.model): (m.parameters or {}).get("weight", params.get("weight", 1.0))
        for m in config.models or []
    }
    alpha = _scalar(alpha_setting)
    scalars = {k: _scalar(v) for k, v in weights.items()}
    folded = None
    if alpha is not None and all(v is not None for v in scalars.values()):
        total = sum(scalars.values()) if normalize else 1.0
        folded = {str(config.base_model): alpha}
        folded.update({k: (1 - alpha) * v / total for k, v in scalars.items()})
    return {
        "base_weight": alpha_setting,
        "weights": weights,
        "normalize": normalize,
        "coefficients": folded,
    }


def card_section(config: MergeConfiguration, plan: MergePlan) -> str:
    """Markdown appended to mergekit's README.md for a bai merge."""
    ratios = ratio_summary(config)
    lines = [
        "",
        "## Balanced Actor Initialization (BAI)",
        "",
        f"Merged with `merge_method: bai` ([arXiv 2509.00309]({PAPER_URL})):",
        "`M = alpha * M_base + (1 - alpha) * sum_i w_i M_i / sum_i w_i`, in one fp32 pass.",
        "",
        f"- base model (alpha = `base_weight` = {ratios['base_weight']}): `{plan.base}`",
    ]
    for name, weight in ratios["weights"].items():
        lines.append(f"- `{name}`: weight {weight}")
    lines.append(f"- normalize: {ratios['normalize']}")
    if ratios["coefficients"]:
        lines.append("- effective coefficients (sum to 1 when normalized):")
        for name, coef in ratios["coefficients"].items():
            lines.append(f"  - `{name}`: {coef:.6g}")
    else:
        lines.append("- ratios vary per layer (gradient or filter): see the config above")
    lines.append(f"- config.json from `{plan.config_source}` ({plan.config_reason})")
    return "\n".join(lines) + "\n"
