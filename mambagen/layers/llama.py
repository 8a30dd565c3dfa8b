"""What the LlamaGen-style transformers (GPT, and ARPG built on it) share: their config skeleton, the
2-D RoPE table over the token grid, and float32 logits.

The official codes differ in their blocks (GPT: one causal stack; ARPG: self- then cross-decoder), not in
these: LLaMA blocks (RMSNorm, bias-free attention, SwiGLU), a class slot in front of a square token grid
whose positions enter only through 2-D RoPE, and the official training dropouts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .mlp import llama_hidden_dim
from .rope import rope_2d_table


@dataclass
class LlamaGridConfig:
    dim: int = 1024
    n_layer: int = 24
    n_head: int = 16
    multiple_of: int = 256             # SwiGLU hidden = multiple of this above 2/3 * 4 * dim
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000
    norm_eps: float = 1e-5
    vocab_size: int = 16384            # codebook size of the tokenizer
    num_classes: int = 1000            # label num_classes is the null class (CFG)
    num_tokens: int = 256              # tokens per image (a square grid; 16 x 16 for 256 px and VQ-f16)
    class_dropout: float = 0.1         # label -> null with this probability while training (drawn by the caller)
    # official training defaults
    token_dropout: float = 0.1
    attn_dropout: float = 0.0
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    # official behaviour that official weights rely on
    cls_rope_zero: bool = True         # the class slot's RoPE rows are zeros (False: identity rotation)
    cls_token_num: int = 1             # RoPE rows in front of the grid (see each model's docstring)
    init_std: float = 0.02
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. provenance); not architecture

    def __post_init__(self):
        name = type(self).__name__
        if self.dim % self.n_head:
            raise ValueError(f"{name}: dim {self.dim} is not a multiple of n_head {self.n_head}")
        if self.head_dim % 4:
            raise ValueError(f"{name}: 2-D RoPE needs head_dim = dim / n_head divisible by 4, got {self.head_dim}")
        if self.grid ** 2 != self.num_tokens:
            raise ValueError(f"{name}: num_tokens {self.num_tokens} is not a square grid")
        if self.cls_token_num < 1:
            raise ValueError(f"{name}: cls_token_num must be >= 1, got {self.cls_token_num}")

    @property
    def grid(self) -> int:
        return int(round(self.num_tokens ** 0.5))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return llama_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    def to_dict(self) -> dict:
        return asdict(self)


def grid_rope(cfg: LlamaGridConfig) -> torch.Tensor:
    """(cls_token_num + N, hd/2, 2): the class rows, then the grid in raster order. A function of the config,
    so models keep it as a non-persistent buffer; a larger grid simply has more rows."""
    return rope_2d_table(cfg.grid, cfg.grid, cfg.head_dim, cfg.rope_base, cls_slots=cfg.cls_token_num,
                         cls_zero=cfg.cls_rope_zero)


def float_logits(logits: torch.Tensor) -> torch.Tensor:
    """At least float32 (official: .float()), so CFG and softmax never run in bf16; float64 stays."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))
