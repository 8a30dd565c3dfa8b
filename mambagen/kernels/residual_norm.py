"""Triton: between two AiM blocks at a decoding step, one kernel per row.

    x = x + gate * Σ_s rstd_s * parts_s          the previous block's update: its out_proj ran split-K
                                                 on (g * norm weight); rstd_s = 1 / rms of the slice's
                                                 group of g (the gated RMSNorm, applied after the matmul)
    h = RMSNorm(x) * (1 + scale) + shift         this block's adaLN-modulated mixer input

The PyTorch reference is `sample.fast._residual_update` followed by `AiMBlock.mixer_input`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _residual_norm_kernel(x_ptr, g_ptr, parts_ptr, gate_ptr, w_ptr, shift_ptr, scale_ptr, x_out_ptr, h_ptr,
                          B, D, stride_gate, stride_mod, g_eps, eps,
                          DI: tl.constexpr, S: tl.constexpr, G: tl.constexpr, HAS_UPDATE: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_SLICE: tl.constexpr):
    b = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x = tl.load(x_ptr + b * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_UPDATE:
        SLICE: tl.constexpr = DI // S                         # input channels of one split-K slice
        offs_s = tl.arange(0, S)
        offs_c = tl.arange(0, BLOCK_SLICE)
        g = tl.load(g_ptr + b * DI + offs_s[:, None] * SLICE + offs_c[None, :],
                    mask=(offs_c < SLICE)[None, :], other=0.0).to(tl.float32)          # (S, SLICE)
        ssq = tl.sum(g * g, axis=1)                                                     # (S,)
        same_group = (offs_s[:, None] // (S // G)) == (offs_s[None, :] // (S // G))     # (S, S)
        group_ssq = tl.sum(tl.where(same_group, ssq[None, :], 0.0), axis=1)            # (S,)
        rstd = 1.0 / tl.sqrt(group_ssq / (DI // G) + g_eps)
        parts = tl.load(parts_ptr + offs_s[:, None] * (B * D) + b * D + offs_d[None, :],
                        mask=mask_d[None, :], other=0.0)                               # (S, BLOCK_D)
        gate = tl.load(gate_ptr + b * stride_gate + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        x += gate * tl.sum(parts * rstd[:, None], axis=0)
        tl.store(x_out_ptr + b * D + offs_d, x, mask=mask_d)
    n = x / tl.sqrt(tl.sum(x * x, axis=0) / D + eps) * tl.load(w_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    shift = tl.load(shift_ptr + b * stride_mod + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + b * stride_mod + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    tl.store(h_ptr + b * D + offs_d, (n * (1.0 + scale) + shift).to(h_ptr.dtype.element_ty), mask=mask_d)


def residual_norm_modulate(x, mod, norm_weight, eps: float, out_dtype, g=None, parts=None, gate=None,
                           g_eps: float = 0.0, ngroups: int = 1):
    """x (B, D) float32; mod (B, 3, D) this block's (shift, scale, gate); g (B, DI), parts (S, B, D) float32
    and gate (B, D): the previous block's gated-norm input, split-K out_proj partials and gate (None for
    the first block). Returns (x updated, h in out_dtype), h this block's mixer input."""
    B, D = x.shape
    if mod.stride(-1) != 1 or not x.is_contiguous() or (gate is not None and gate.stride(-1) != 1):
        raise ValueError("residual_norm_modulate: x must be contiguous, mod and gate unit-strided along D")
    has_update = g is not None
    S, DI = (parts.shape[0], g.shape[1]) if has_update else (1, 1)
    if has_update and (S & (S - 1) or S % ngroups or DI % S or not (g.is_contiguous() and parts.is_contiguous())):
        raise ValueError(f"residual_norm_modulate: {S} slices of {DI} channels in {ngroups} groups do not fit")
    x_out = torch.empty_like(x) if has_update else x
    h = torch.empty(B, D, device=x.device, dtype=out_dtype)
    _residual_norm_kernel[(B,)](
        x, g if has_update else x, parts if has_update else x, gate if has_update else x, norm_weight, mod[:, 0],
        mod[:, 1], x_out, h, B, D, gate.stride(0) if has_update else 0, mod.stride(0), float(g_eps), float(eps), DI=DI, S=S, G=ngroups, HAS_UPDATE=has_update,
        BLOCK_D=triton.next_power_of_2(D), BLOCK_SLICE=triton.next_power_of_2(max(DI // S, 1)),
        num_warps=8 if D >= 1024 else 4)
    return x_out, h
