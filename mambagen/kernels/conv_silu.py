"""Triton: Mamba2's causal depthwise conv with its SiLU, forward and backward, channels last.

The reference is `conv_silu_reference` below (the library's depthwise conv1d, as `Mamba2.forward` runs
it). For each channel d and step t, with K taps and zeros before the sequence:

    pre_t = bias + sum_k w[k] x[t - (K - 1) + k]        out_t = SiLU(pre_t)

The mixer's input arrives channels last (a slice of in_proj's output), so the kernel reads it in
place (no transpose copies) and writes its output channels last for the scan. Backward: one kernel
recomputes pre and gives d pre = d out * SiLU'(pre) with the weight and bias gradients per tile of
steps (partials, summed after); a second gives dx_t = sum_k w[k] dpre_{t + (K - 1) - k}.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_T, BLOCK_D = 32, 128


def conv_silu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, L, D), weight (D, K), bias (D,) or None -> SiLU(causal depthwise conv) (B, L, D)."""
    D, K = weight.shape
    out = F.conv1d(F.pad(x.transpose(1, 2), (K - 1, 0)), weight[:, None].to(x.dtype),
                   None if bias is None else bias.to(x.dtype), groups=D)
    return F.silu(out).transpose(1, 2)


@triton.jit
def _pre(x_ptr, w_ptr, b_ptr, b, offs_t, offs_d, L, D, sx_b, sx_t, K: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The conv before its SiLU for a (BLOCK_T, BLOCK_D) tile, in float32."""
    md = offs_d < D
    acc = tl.zeros((offs_t.shape[0], offs_d.shape[0]), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)[None, :]
    for k in range(K):
        src = offs_t - (K - 1) + k
        m = (src >= 0) & (src < L)
        xk = tl.load(x_ptr + b.to(tl.int64) * sx_b + src[:, None] * sx_t + offs_d[None, :],
                     mask=m[:, None] & md[None, :], other=0.0).to(tl.float32)
        acc += xk * tl.load(w_ptr + offs_d * K + k, mask=md, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _conv_silu_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, D, sx_b, sx_t,
                          K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    b, tb, db = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_t, offs_d = tb * BLOCK_T + tl.arange(0, BLOCK_T), db * BLOCK_D + tl.arange(0, BLOCK_D)
    pre = _pre(x_ptr, w_ptr, b_ptr, b, offs_t, offs_d, L, D, sx_b, sx_t, K, HAS_BIAS)
    out = pre * tl.sigmoid(pre)
    tl.store(out_ptr + (b.to(tl.int64) * L + offs_t[:, None]) * D + offs_d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=(offs_t[:, None] < L) & (offs_d[None, :] < D))


@triton.jit
def _conv_silu_bwd_pre_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dpre_ptr, dwb_ptr, L, D, sx_b, sx_t,
                              K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """d pre for a tile, and this tile's share of dw (K rows) and db (one row) in dwb[tile]."""
    b, tb, db = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_t, offs_d = tb * BLOCK_T + tl.arange(0, BLOCK_T), db * BLOCK_D + tl.arange(0, BLOCK_D)
    mt, md = offs_t < L, offs_d < D
    m = mt[:, None] & md[None, :]
    pre = _pre(x_ptr, w_ptr, b_ptr, b, offs_t, offs_d, L, D, sx_b, sx_t, K, HAS_BIAS)
    s = tl.sigmoid(pre)
    dout = tl.load(dout_ptr + (b.to(tl.int64) * L + offs_t[:, None]) * D + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
    dpre = tl.where(m, dout * s * (1 + pre * (1 - s)), 0.0)
    tl.store(dpre_ptr + (b.to(tl.int64) * L + offs_t[:, None]) * D + offs_d[None, :], dpre, mask=m)
    tile = (b * tl.num_programs(1) + tb).to(tl.int64) * (K + 1)
    for k in range(K):
        src = offs_t - (K - 1) + k
        ms = (src >= 0) & mt
        xk = tl.load(x_ptr + b.to(tl.int64) * sx_b + src[:, None] * sx_t + offs_d[None, :],
                     mask=ms[:, None] & md[None, :], other=0.0).to(tl.float32)
        tl.store(dwb_ptr + (tile + k) * D + offs_d, tl.sum(dpre * xk, axis=0), mask=md)
    tl.store(dwb_ptr + (tile + K) * D + offs_d, tl.sum(dpre, axis=0), mask=md)


@triton.jit
def _conv_bwd_dx_kernel(dpre_ptr, w_ptr, dx_ptr, L, D, K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    b, tb, db = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_t, offs_d = tb * BLOCK_T + tl.arange(0, BLOCK_T), db * BLOCK_D + tl.arange(0, BLOCK_D)
    md = offs_d < D
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for k in range(K):
        dst = offs_t + (K - 1) - k                       # the step whose tap k read x_t
        m = dst < L
        acc += tl.load(dpre_ptr + (b.to(tl.int64) * L + dst[:, None]) * D + offs_d[None, :],
                       mask=m[:, None] & md[None, :], other=0.0) * \
            tl.load(w_ptr + offs_d * K + k, mask=md, other=0.0).to(tl.float32)[None, :]
    tl.store(dx_ptr + (b.to(tl.int64) * L + offs_t[:, None]) * D + offs_d[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=(offs_t[:, None] < L) & md[None, :])


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A (B, L, D) view the kernels can index with a batch and a step stride: channels contiguous."""
    return x if x.stride(2) == 1 else x.contiguous()


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x = _rows(x)
        B, L, D = x.shape
        K = weight.shape[1]
        out = torch.empty(B, L, D, device=x.device, dtype=x.dtype)
        grid = (B, triton.cdiv(L, BLOCK_T), triton.cdiv(D, BLOCK_D))
        _conv_silu_fwd_kernel[grid](x, weight, bias if bias is not None else weight, out, L, D, x.stride(0), x.stride(1),
                                    K=K, HAS_BIAS=bias is not None, BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D)
        ctx.save_for_backward(x, weight, bias)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        B, L, D = x.shape
        K = weight.shape[1]
        dout = dout.contiguous()
        grid = (B, triton.cdiv(L, BLOCK_T), triton.cdiv(D, BLOCK_D))
        dpre = torch.empty(B, L, D, device=x.device, dtype=torch.float32)
        dwb = torch.empty(B * grid[1], K + 1, D, device=x.device, dtype=torch.float32)
        _conv_silu_bwd_pre_kernel[grid](x, weight, bias if ctx.has_bias else weight, dout, dpre, dwb, L, D,
                                        x.stride(0), x.stride(1), K=K, HAS_BIAS=ctx.has_bias,
                                        BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D)
        dx = torch.empty(B, L, D, device=x.device, dtype=x.dtype)
        _conv_bwd_dx_kernel[grid](dpre, weight, dx, L, D, K=K, BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D)
        dwb = dwb.sum(0)                                                   # (K + 1, D)
        dw = dwb[:K].t().to(weight.dtype).contiguous()
        return dx, dw, dwb[K].to(bias.dtype) if ctx.has_bias else None


def conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`conv_silu_reference` on Triton: x (B, L, D) channels last, weight (D, K), bias (D,) or None ->
    (B, L, D) contiguous in x's dtype. Differentiable in x, weight and bias."""
    return _ConvSiLU.apply(x, weight, bias)
