"""Triton: one decoding step of the Mamba2 SSM, in place. The reference is `layers.ssd_ref.ssd_step`.

    state = exp(dt * A) * state + dt * x B^T        (per batch row and head: headdim x d_state)
    y     = state C

The recurrent state is the largest tensor decoding touches every token (AiM-L at batch 32:
1.6 GB in float32), so the step reads it once and writes it once, here, in one kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ssm_step_kernel(state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, y_ptr,
                     H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, HEADS_PER_GROUP: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)                      # one (batch row, head) ...
    pb = tl.program_id(1)                      # ... and a block of headdim rows
    b, h = bh // H, bh % H
    g = h // HEADS_PER_GROUP
    offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < P, offs_n < N
    dt = tl.load(dt_ptr + bh).to(tl.float32)
    decay = tl.exp(dt * tl.load(A_ptr + h).to(tl.float32))
    x = tl.load(x_ptr + bh * P + offs_p, mask=mask_p, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + (b * (H // HEADS_PER_GROUP) + g) * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + (b * (H // HEADS_PER_GROUP) + g) * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    s_ptrs = state_ptr + (bh * P + offs_p[:, None]) * N + offs_n[None, :]
    m = mask_p[:, None] & mask_n[None, :]
    s = tl.load(s_ptrs, mask=m, other=0.0).to(tl.float32)        # stored in the model dtype, updated in fp32
    s = s * decay + (dt * x)[:, None] * Bv[None, :]
    tl.store(s_ptrs, s.to(state_ptr.dtype.element_ty), mask=m)
    y = tl.sum(s * Cv[None, :], axis=1)
    tl.store(y_ptr + bh * P + offs_p, y, mask=mask_p)


def ssm_step_inplace(state, x, dt, A, B, C):
    """state (b, h, p, n) (float32 or the model's bf16/fp16), updated in place; x (b, h, p); dt (b, h); A (h,); B, C (b, g, n).
    Returns y (b, h, p) float32 (without the D skip), like `ssd_step`."""
    b, h, p, n = state.shape
    if not state.is_contiguous():
        raise ValueError("the SSM state must be contiguous")
    x, dt, B, C = x.contiguous(), dt.float().contiguous(), B.contiguous(), C.contiguous()
    y = torch.empty(b, h, p, device=state.device, dtype=torch.float32)
    BLOCK_P = min(triton.next_power_of_2(p), 32)
    grid = (b * h, triton.cdiv(p, BLOCK_P))
    _ssm_step_kernel[grid](state, x, dt, A.float().contiguous(), B, C, y, H=h, P=p, N=n,
                           HEADS_PER_GROUP=h // B.shape[1], BLOCK_P=BLOCK_P, BLOCK_N=triton.next_power_of_2(n))
    return y
