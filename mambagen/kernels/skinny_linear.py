"""Triton: y = a @ w^T for a few rows (decoding: batch x CFG rows), split over K.

Decoding multiplies 16-64 rows by each weight matrix: the time is reading the weights once.
cuBLAS picks tiles for large M and launches too few blocks to keep every SM reading; here
each program owns BLOCK_N output columns of all rows and one slice of K, so a (1024 x 2048)
matrix is read by 128+ programs at once. With split > 1 the slices' float32 partial sums are
returned, stacked, for the consumer to add (`.sum(0)`, which a compiled consumer fuses into
its own elementwise kernel): no second kernel, no atomics.

The reference is `torch.nn.functional.linear` (tests compare the two).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _skinny_linear_kernel(a_ptr, w_ptr, scale_ptr, out_ptr, M, N, K, stride_am, stride_wn, stride_os, stride_om,
                          K_SPLIT: tl.constexpr, HAS_SCALE: tl.constexpr, IEEE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(pid_s * K_SPLIT, (pid_s + 1) * K_SPLIT, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + offs_k[None, :], mask=mask_m[:, None], other=0.0)
        if HAS_SCALE:   # a per-input-channel factor (a norm's weight), applied as the rows are read
            a = (a.to(tl.float32) * tl.load(scale_ptr + offs_k).to(tl.float32)[None, :]).to(a_ptr.dtype.element_ty)
        w = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None], mask=mask_n[None, :], other=0.0)
        if IEEE:     # float32 operands: true float32 products (tl.dot would round them to tf32)
            acc += tl.dot(a, w, input_precision="ieee")
        else:
            acc += tl.dot(a, w)                               # (BLOCK_M, BLOCK_K) @ (BLOCK_K, BLOCK_N)
    tl.store(out_ptr + pid_s * stride_os + offs_m[:, None] * stride_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def skinny_linear(a: torch.Tensor, w: torch.Tensor, *, scale: torch.Tensor | None = None, split: int = 1,
                  block_n: int = 32, block_k: int = 128, num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """(a * scale) @ w^T: a (M, K), w (N, K), scale (K,) or None -> (M, N) in a's dtype when split == 1,
    else (split, M, N) float32 partials, partial s from input channels [s K / split, (s + 1) K / split)."""
    M, K = a.shape
    N = w.shape[0]
    if M > 128 or K % (split * block_k):
        raise ValueError(f"skinny_linear: needs M <= 128 and K divisible by split*block_k, got M={M} K={K} "
                         f"split={split} block_k={block_k}")
    a, w = a.contiguous(), w.contiguous()
    out = (torch.empty(M, N, device=a.device, dtype=a.dtype) if split == 1 else
           torch.empty(split, M, N, device=a.device, dtype=torch.float32))
    grid = (triton.cdiv(N, block_n), split)
    _skinny_linear_kernel[grid](a, w, scale if scale is not None else w, out, M, N, K, a.stride(0), w.stride(0),
                                M * N, N, K_SPLIT=K // split, HAS_SCALE=scale is not None,
                                IEEE=a.dtype == torch.float32,
                                BLOCK_M=max(16, triton.next_power_of_2(M)), BLOCK_N=block_n, BLOCK_K=block_k,
                                num_warps=num_warps, num_stages=num_stages)
    return out
