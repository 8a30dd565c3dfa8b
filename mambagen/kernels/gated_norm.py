"""Triton: Mamba2's gated RMSNorm, forward and backward, one pass over each row.

The reference is `layers.norm.RMSNormGated` (norm_before_gate=False, as AiM and M-VAR use it): per
group of channels, with g = x * SiLU(z),

    out = g * rstd * weight,        rstd = 1 / sqrt(mean(g^2) + eps)

Eagerly that is about ten elementwise kernels and as many float32 copies of the (tokens, d_inner)
activation; here the forward reads x and z once and keeps rstd per row and group, and the backward
reads x, z and d out once (each program sums its tiles' weight gradient before storing a partial):

    n = g * rstd,   dg = rstd * (d out * w - n * mean(d out * w * n)),
    dx = dg * SiLU(z),   dz = dg * x * SiLU'(z),   dw = sum over rows of d out * n (per tile of rows).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE = 4096   # elements of a (rows, group) tile: rows per tile = TILE / the padded group width
ITERS = 16    # tiles of rows a backward program visits, summing its weight gradient before storing it


def _tile_rows(block: int) -> int:
    return max(1, TILE // block)


def _warps(block: int) -> int:
    return 8 if block >= 1024 else 4


@triton.jit
def _gate(x_ptr, z_ptr, rows, offs, R, W, GS):
    m = (rows[:, None] < R) & (offs[None, :] < GS)
    idx = rows[:, None].to(tl.int64) * W + offs[None, :]
    x = tl.load(x_ptr + idx, mask=m, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + idx, mask=m, other=0.0).to(tl.float32)
    return x, z, m, idx


@triton.jit
def _gated_norm_fwd_kernel(x_ptr, z_ptr, w_ptr, out_ptr, rstd_ptr, R, W, GS, NG, eps,
                           ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rb, grp = tl.program_id(0), tl.program_id(1)
    rows, offs = rb * ROWS + tl.arange(0, ROWS), tl.arange(0, BLOCK)
    x, z, m, idx = _gate(x_ptr + grp * GS, z_ptr + grp * GS, rows, offs, R, W, GS)
    g = x * z * tl.sigmoid(z)
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=1) / GS + eps)
    w = tl.load(w_ptr + grp * GS + offs, mask=offs < GS, other=0.0).to(tl.float32)
    tl.store(out_ptr + grp * GS + idx, (g * rstd[:, None] * w[None, :]).to(out_ptr.dtype.element_ty), mask=m)
    tl.store(rstd_ptr + rows * NG + grp, rstd, mask=rows < R)


@triton.jit
def _gated_norm_bwd_kernel(x_ptr, z_ptr, w_ptr, rstd_ptr, dout_ptr, dx_ptr, dz_ptr, dw_ptr, R, W, GS, NG,
                           ROWS: tl.constexpr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    rb, grp = tl.program_id(0), tl.program_id(1)
    offs = tl.arange(0, BLOCK)
    w = tl.load(w_ptr + grp * GS + offs, mask=offs < GS, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(ITERS):
        rows = (rb * ITERS + i) * ROWS + tl.arange(0, ROWS)
        x, z, m, idx = _gate(x_ptr + grp * GS, z_ptr + grp * GS, rows, offs, R, W, GS)
        s = tl.sigmoid(z)
        rstd = tl.load(rstd_ptr + rows * NG + grp, mask=rows < R, other=0.0)[:, None]
        n = x * z * s * rstd
        dout = tl.load(dout_ptr + grp * GS + idx, mask=m, other=0.0).to(tl.float32)
        dn = dout * w[None, :]
        dg = rstd * (dn - n * (tl.sum(dn * n, axis=1) / GS)[:, None])
        tl.store(dx_ptr + grp * GS + idx, (dg * z * s).to(dx_ptr.dtype.element_ty), mask=m)
        tl.store(dz_ptr + grp * GS + idx, (dg * x * s * (1 + z * (1 - s))).to(dz_ptr.dtype.element_ty), mask=m)
        dw += tl.sum(dout * n, axis=0)
    tl.store(dw_ptr + rb.to(tl.int64) * W + grp * GS + offs, dw, mask=offs < GS)


class _GatedNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, z, weight, group_size, eps):
        shape = x.shape
        x, z = x.reshape(-1, shape[-1]).contiguous(), z.reshape(-1, shape[-1]).contiguous()
        R, W = x.shape
        ng = W // group_size
        out = torch.empty_like(x)
        rstd = torch.empty(R, ng, device=x.device, dtype=torch.float32)
        BLOCK = triton.next_power_of_2(group_size)
        rows = _tile_rows(BLOCK)
        _gated_norm_fwd_kernel[(triton.cdiv(R, rows), ng)](x, z, weight, out, rstd, R, W, group_size, ng, eps,
                                                           ROWS=rows, BLOCK=BLOCK, num_warps=_warps(BLOCK))
        ctx.save_for_backward(x, z, weight, rstd)
        ctx.group_size, ctx.shape = group_size, shape
        return out.view(shape)

    @staticmethod
    def backward(ctx, dout):
        x, z, weight, rstd = ctx.saved_tensors
        R, W = x.shape
        ng = W // ctx.group_size
        dout = dout.reshape(R, W).contiguous()
        dx, dz = torch.empty_like(x), torch.empty_like(z)
        BLOCK = triton.next_power_of_2(ctx.group_size)
        rows = _tile_rows(BLOCK)
        grid = (triton.cdiv(R, rows * ITERS), ng)
        dw = torch.empty(grid[0], W, device=x.device, dtype=torch.float32)
        _gated_norm_bwd_kernel[grid](x, z, weight, rstd, dout, dx, dz, dw, R, W, ctx.group_size, ng,
                                     ROWS=rows, ITERS=ITERS, BLOCK=BLOCK, num_warps=_warps(BLOCK))
        return dx.view(ctx.shape), dz.view(ctx.shape), dw.sum(0).to(weight.dtype), None, None


def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """RMSNorm(x * SiLU(z)) * weight over groups of `group_size` channels (norm_before_gate=False):
    x, z (..., W) of one dtype, weight (W,) -> (..., W) in x's dtype. Differentiable in x, z and weight."""
    return _GatedNorm.apply(x, z, weight, group_size, eps)
