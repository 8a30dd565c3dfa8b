"""Triton: a whole Mamba2 decode step between the two projections, in one kernel.

The reference is `layers.mamba2.Mamba2.step`, which runs, per token and layer,

    z, xBC, dt = split(in_proj(u))
    xBC        = SiLU(causal_conv_step(conv_history, xBC))     (history shifted by one)
    x, B, C    = split(xBC)
    dt         = softplus(dt + dt_bias)
    state      = exp(dt * A) * state + dt * x B^T              (per row and head: headdim x d_state)
    y          = state C + D * x
    g          = y * SiLU(z)                                   (then gated RMSNorm's norm and out_proj)

as a dozen small kernels; here it is one. The SSM state (the largest tensor decoding touches)
is read once and written once; the inner activations never leave the kernel.

One program owns one batch row, one head and a block of headdim channels. It owns the conv
history of its x channels, but every head of a group reads the same B and C channels, so their
history is double buffered: the step with index t reads buffer t % 2 and the group's first
program writes the shifted history to buffer (t + 1) % 2 - no program overwrites what another
still reads. The buffers are `Mamba2Cache.conv_pair` (buffer 0 is `Mamba2Cache.conv`, where
prefill writes).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _conv_silu(hist_ptr, next_ptr, new_ptr, w_ptr, bias_ptr, ch, mask, store_mask,
               K: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr):
    """SiLU(causal depthwise conv) of channels `ch` at this step, float32; stores the shifted
    history of the channels in `store_mask`."""
    j = tl.arange(0, BLOCK_K)                                   # window position; K - 1 is the new input
    hist = tl.load(hist_ptr + ch[:, None] * (K - 1) + j[None, :],
                   mask=mask[:, None] & (j[None, :] < K - 1), other=0.0)
    new = tl.load(new_ptr + ch, mask=mask, other=0.0)
    window = tl.where(j[None, :] == K - 1, new[:, None], hist)  # (channels, BLOCK_K)
    tl.store(next_ptr + ch[:, None] * (K - 1) + j[None, :] - 1, window,   # next history: window[1:]
             mask=store_mask[:, None] & (j[None, :] >= 1) & (j[None, :] < K))
    w = tl.load(w_ptr + ch[:, None] * K + j[None, :], mask=mask[:, None] & (j[None, :] < K), other=0.0)
    out = tl.sum(window.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + ch, mask=mask, other=0.0).to(tl.float32)
    return out * tl.sigmoid(out)


@triton.jit
def _mamba2_step_kernel(zxbcdt_ptr, conv_ptr, conv_w_ptr, conv_b_ptr, dt_bias_ptr, A_log_ptr, D_ptr,
                        state_ptr, index_ptr, out_ptr, pair_stride, dt_min, dt_max,
                        H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, G: tl.constexpr, K: tl.constexpr,
                        HAS_BIAS: tl.constexpr, D_PER_CHANNEL: tl.constexpr, CLAMP_DT: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    bh = tl.program_id(0)                      # one (batch row, head) ...
    pb = tl.program_id(1)                      # ... and a block of headdim channels
    b, h = bh // H, bh % H
    g = h // (H // G)
    DI: tl.constexpr = H * P                   # d_inner
    CD: tl.constexpr = DI + 2 * G * N          # conv channels: x | B | C
    row = zxbcdt_ptr + b * (DI + CD + H)       # [z | x B C | dt] of this batch row
    parity = tl.load(index_ptr) % 2
    hist = conv_ptr + parity * pair_stride + b * CD * (K - 1)
    nxt = conv_ptr + (1 - parity) * pair_stride + b * CD * (K - 1)

    offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < P, offs_n < N
    # the state block first: its load (the bulk of the kernel's bytes) overlaps the conv work below
    s_ptrs = state_ptr + (bh * P + offs_p[:, None]) * N + offs_n[None, :]
    m = mask_p[:, None] & mask_n[None, :]
    s = tl.load(s_ptrs, mask=m, other=0.0).to(tl.float32)        # stored in the model dtype, updated in fp32
    ch_x = h * P + offs_p                                        # this program's x channels
    x = _conv_silu(hist, nxt, row + DI, conv_w_ptr, conv_b_ptr, ch_x, mask_p, mask_p, K, BLOCK_K, HAS_BIAS)
    # the one program that writes the group's B/C history: its first head's first channel block
    leader = mask_n & (offs_n * 0 + (h % (H // G)) + pb == 0)
    ch_B = DI + g * N + offs_n
    ch_C = DI + G * N + g * N + offs_n
    Bv = _conv_silu(hist, nxt, row + DI, conv_w_ptr, conv_b_ptr, ch_B, mask_n, leader, K, BLOCK_K, HAS_BIAS)
    Cv = _conv_silu(hist, nxt, row + DI, conv_w_ptr, conv_b_ptr, ch_C, mask_n, leader, K, BLOCK_K, HAS_BIAS)

    dt = tl.load(row + DI + CD + h).to(tl.float32) + tl.load(dt_bias_ptr + h).to(tl.float32)
    dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))    # softplus (torch's threshold)
    if CLAMP_DT:
        dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    decay = tl.exp(-dt * tl.exp(tl.load(A_log_ptr + h).to(tl.float32)))   # exp(dt * A), A = -exp(A_log)
    s = s * decay + (dt * x)[:, None] * Bv[None, :]
    tl.store(s_ptrs, s.to(state_ptr.dtype.element_ty), mask=m)
    y = tl.sum(s * Cv[None, :], axis=1)
    if D_PER_CHANNEL:
        y += x * tl.load(D_ptr + ch_x, mask=mask_p, other=0.0).to(tl.float32)
    else:
        y += x * tl.load(D_ptr + h).to(tl.float32)
    z = tl.load(row + ch_x, mask=mask_p, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * DI + ch_x, (y * z * tl.sigmoid(z)).to(out_ptr.dtype.element_ty), mask=mask_p)


def mamba2_step_fused(zxbcdt, conv_pair, state, index, conv_weight, conv_bias, dt_bias, A_log, D, *,
                      ngroups: int, dt_limit=(0.0, float("inf")), block_p: int = 16, num_warps: int = 4):
    """One decode step of a Mamba2 mixer after its in_proj.

    zxbcdt    (b, 2*d_inner + 2*ngroups*d_state + nheads): the in_proj output of this token
    conv_pair (2, b, conv_dim, d_conv - 1): the double-buffered conv history (see module doc)
    state     (b, nheads, headdim, d_state), updated in place
    index     0-d int tensor: the step number (its parity picks the conv buffer)
    A_log     (nheads,): the decay is exp(dt * A) with A = -exp(A_log)
    block_p, num_warps: headdim channels per program and its warps (tuning only: 16 / 4 was the
                        fastest for AiM-L on an H100, bench/results/h100_decode_parts_tuning.json)
    Returns g = y * SiLU(z), (b, d_inner) in zxbcdt's dtype: the input of the gated norm's normalisation.
    """
    b, H, P, N = state.shape
    K = conv_weight.shape[-1]
    conv_dim = H * P + 2 * ngroups * N
    if not (state.is_contiguous() and conv_pair.is_contiguous() and zxbcdt.is_contiguous()):
        raise ValueError("mamba2_step_fused: state, conv_pair and zxbcdt must be contiguous")
    if conv_pair.shape != (2, b, conv_dim, K - 1):
        raise ValueError(f"mamba2_step_fused: conv_pair must be (2, {b}, {conv_dim}, {K - 1}), got {tuple(conv_pair.shape)}")
    out = torch.empty(b, H * P, device=state.device, dtype=zxbcdt.dtype)
    BLOCK_P = min(triton.next_power_of_2(P), block_p)
    clamp = tuple(dt_limit) != (0.0, float("inf"))
    grid = (b * H, triton.cdiv(P, BLOCK_P))
    _mamba2_step_kernel[grid](
        zxbcdt, conv_pair, conv_weight, conv_bias if conv_bias is not None else conv_weight, dt_bias, A_log, D,
        state, index, out, conv_pair.stride(0), float(dt_limit[0]), float(min(dt_limit[1], 3.0e38)),
        H=H, P=P, N=N, G=ngroups, K=K, HAS_BIAS=conv_bias is not None, D_PER_CHANNEL=D.numel() == H * P,
        CLAMP_DT=clamp, BLOCK_P=BLOCK_P, BLOCK_N=triton.next_power_of_2(N), BLOCK_K=triton.next_power_of_2(K),
        num_warps=num_warps)
    return out
