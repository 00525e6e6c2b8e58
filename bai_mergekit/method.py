"""The `bai` merge method on mergekit's merge-method API (the math is bai_core.merge_math)."""

from __future__ import annotations

import torch
from mergekit.merge_methods import (
    BasePolicy,
    InputContract,
    OptionalTensorPolicy,
    PerNonBase,
    TensorGroup,
    merge_method,
)

from bai_core.merge_math import BaiMergeError, NonFiniteMerge, bai_merge, nonfinite_error
from bai_mergekit.output import PAPER_URL


@merge_method(
    name="bai",
    pretty_name="Balanced Actor Initialization (BAI)",
    reference_url=PAPER_URL,
    contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2, min_non_base=1),
    optional_tensor_policy=OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
)
def bai_merge_method(group: TensorGroup, weight: PerNonBase[float] = 1.0,
                     base_weight: float = 0.5, normalize: bool = True,
                     config_source: str | None = None) -> torch.Tensor:
    """alpha * base + (1 - alpha) * normalized weighted mean of the other models (fp32 math);
    `config_source` is read by the plugin when it writes config.json, the kernel ignores it."""
    base, others = group.base, group.non_base
    try:
        # Rounded once, straight to the input dtype: mergekit casts to `out_dtype` after
        # this, as for `linear`, so `dtype: bfloat16` recipes stay bf16 on disk.
        merged = bai_merge(base.tensor, [e.tensor for e in others], weight.values_for(others),
                           base_weight, normalize, out_dtype=base.tensor.dtype,
                           check_finite=True)
    except NonFiniteMerge:
        raise nonfinite_error(group.metadata.name, [(str(e.id), e.tensor)
                                                    for e in group.entries]) from None
    except BaiMergeError as error:
        raise BaiMergeError(f"{error} (tensor {group.metadata.name!r})") from None
    return merged


def ensure_registered() -> None:
    """Add `bai` to mergekit's registry once (also run when this module is first imported)."""
    from mergekit.merge_methods import registry

    if "bai" not in {m.spec.name for m in registry.registered_methods()}:
        registry.register(bai_merge_method)


ensure_registered()
