"""SwiGLU feed-forward of LLaMA / LlamaGen / ARPG: w2(SiLU(w1 x) * w3 x)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def llama_init_(model: nn.Module, std: float, head: nn.Linear) -> None:
    """LlamaGen/ARPG init: N(0, std) for every Linear and Embedding weight (RMSNorm gains stay 1), and a zero
    head, so training starts from the uniform next-token distribution (loss log V)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
    nn.init.zeros_(head.weight)


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def llama_hidden_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """The official rule: 2/3 of 4 * dim, times an optional multiplier, rounded up to multiple_of."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return find_multiple(hidden, multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))
