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
    """y = RMSNorm(x * SiLU(z)) * weight (or RMSNorm(x) * weight * SiLU(z) when norm_before_gate),
    normalised over groups of `group_size` channels.

    This is Mamba2's output norm with norm_before_gate=False; with ngroups > 1 each
    group of d_inner/ngroups channels is normalised on its own.
    """

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None, norm_before_gate: bool = False):
        super().__init__()
        self.eps, self.norm_before_gate = eps, norm_before_gate
        self.group_size = group_size or dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """z None: x is already gated (the fused decode kernel gates before it stores)."""
        dtype, acc = x.dtype, _acc(x)
        x = x.to(acc)
        gate = F.silu(z.to(acc)) if z is not None else None
        if gate is not None and not self.norm_before_gate:
            x = x * gate
        xg = x.unflatten(-1, (-1, self.group_size))                  # (..., groups, group_size)
        x = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2) * self.weight.to(acc)
        if gate is not None and self.norm_before_gate:
            x = x * gate
        return x.to(dtype)
