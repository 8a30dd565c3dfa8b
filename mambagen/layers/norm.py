"""RMSNorm and Mamba2's gated RMSNorm (computed in float32, returned in the input dtype)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # at least float32; float64 stays


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = x.to(_acc(x))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class RMSNormGated(nn.Module):
    """y = RMSNorm(x * SiLU(z)) * weight, normalised over groups of `group_size` channels.

    This is Mamba2's output norm with norm_before_gate=False; with ngroups > 1 each
    group of d_inner/ngroups channels is normalised on its own.
    """

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.eps = eps
        self.group_size = group_size or dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(_acc(x)) * F.silu(z.to(_acc(x)))
        xg = x.unflatten(-1, (-1, self.group_size))                  # (..., groups, group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xg.flatten(-2) * self.weight.to(xg.dtype)).to(dtype)
