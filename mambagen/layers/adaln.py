"""adaLN conditioning (DiT) and AiM's adaLN-group.

Every block modulates its normalised input with a (shift, scale) and gates its
output, all predicted from the class embedding c:

    x = x + gate * f(norm(x) * (1 + scale) + shift)

Per-layer adaLN gives each block its own Linear(SiLU(c)). adaLN-group shares one
Linear(SiLU(c)) that emits G sets of (shift, scale, gate); layer i uses set i % G
plus a learned per-layer table. G = 1 is adaLN-single (PixArt), G = n_layer is
as expressive as per-layer adaLN.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNGroup(nn.Module):
    """Linear(SiLU(c)) -> (B, G, n_mod, D): G groups of n_mod modulation vectors."""

    def __init__(self, dim: int, groups: int, n_mod: int = 3):
        super().__init__()
        self.groups, self.n_mod = groups, n_mod
        self.proj = nn.Linear(dim, groups * n_mod * dim)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(c)).unflatten(-1, (self.groups, self.n_mod, -1))
