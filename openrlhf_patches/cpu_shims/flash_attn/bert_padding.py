"""CPU-mode stand-in: pure-torch flash_attn.bert_padding helpers (no kernels, never on GPU)."""

import torch
from einops import rearrange  # noqa: F401  (re-exported, as flash_attn does)


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return x[indices]


def unpad_input(hidden: torch.Tensor, mask: torch.Tensor, unused_mask=None):
    seqlens = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu = torch.nn.functional.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
    flat = hidden.reshape(-1, *hidden.shape[2:])[indices]
    return flat, indices, cu, int(seqlens.max().item()) if seqlens.numel() else 0, seqlens


def pad_input(hidden: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int):
    out = hidden.new_zeros(batch * seqlen, *hidden.shape[1:])
    out[indices] = hidden
    return out.reshape(batch, seqlen, *hidden.shape[1:])
