"""The chunked SSD scan arranged for tensor cores: the training/prefill fast path.

Same four steps and same result as `ssd_ref.ssd_chunked` (tested to float64 precision and
against it in bf16 on a GPU), written so that a compiler turns it into a few large batched
matmuls plus fused elementwise work:

* the matmul operands (x, B, C, the in-chunk scores, the carried states) stay in the input
  dtype (bf16 under autocast), as mamba_ssm's kernels feed them to tensor cores; decays,
  cumulative sums, the carry between chunks and the output sum are float32;
* B and C keep their groups: the in-chunk C B^T is computed once per group, not once per
  head, and heads are viewed as (groups, heads per group) rather than copied;
* the decay from step s to step l inside a chunk is exp(a_cum[l] - a_cum[s]) (masked before
  the exp, so nothing overflows), the difference of a float32 cumulative sum.

`ssd_chunked_compiled` runs this function under torch.compile (fixed shapes) on CUDA and eagerly
elsewhere; `Mamba2` uses it for CUDA forwards that build a graph for the backward pass, the
reference everywhere else. `ssd_chunked_recomputed` keeps only the scan's inputs for the backward
pass and recomputes its intermediates there: the float32 states and in-chunk decays of AiM-L at
batch 64 x 256 would otherwise need more than 80 GB, and recomputing the scan is much cheaper than
recomputing whole blocks (activation checkpointing).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def ssd_chunked_fast(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """x (b, l, h, p), dt (b, l, h) float, A (h,), B/C (b, l, g, n) -> y (b, l, h, p) float32, state (b, h, p, n)."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g                                                         # heads per group
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    mm = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else acc
    Q = min(chunk_size, l)
    pad = -l % Q
    if pad:  # zero steps pass the state through unchanged (see ssd_ref)
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    c = x.shape[1] // Q

    dt = dt.to(acc)
    a_cum = (dt * A.to(acc)).view(b, c, Q, h).cumsum(dim=2)           # (b, c, Q, h) log-decay from chunk start
    a_cum_t = a_cum.transpose(2, 3)                                    # (b, c, h, Q)
    X = (x.to(acc) * dt[..., None]).view(b, c, Q, g, r, p)            # dt-scaled input
    Bc = B.to(mm).view(b, c, Q, g, n)
    Cc = C.to(mm).view(b, c, Q, g, n)

    # 1. inside each chunk: (C B^T per group) * decay(l <- s), then times X
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    seg = (a_cum_t[..., :, None] - a_cum_t[..., None, :]).masked_fill(~causal, float("-inf"))
    decay = torch.exp(seg).view(b, c, g, r, Q, Q)                      # (b, c, g, r, Q, Q)
    CB = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)                   # (b, c, g, Q, Q)
    scores = (CB[:, :, :, None].to(acc) * decay).to(mm)
    y_diag = torch.einsum("bcgrls,bcsgrp->bclgrp", scores, X.to(mm))

    # 2. each chunk's own end state: sum_s decay(end <- s) B_s X_s^T
    to_end = torch.exp(a_cum[:, :, -1:] - a_cum).view(b, c, Q, g, r, 1)
    chunk_states = torch.einsum("bclgn,bclgrp->bcgrpn", Bc, (X * to_end).to(mm)).to(acc)

    # 3. carry the states across chunks (c is small: L / chunk)
    chunk_decay = torch.exp(a_cum[:, :, -1]).view(b, c, g, r, 1, 1)   # whole-chunk decay per head
    state = (initial_state.to(acc).view(b, g, r, p, n) if initial_state is not None
             else X.new_zeros(b, g, r, p, n))
    entering = []
    for k in range(c):
        entering.append(state)
        state = state * chunk_decay[:, k] + chunk_states[:, k]
    entering = torch.stack(entering, dim=1).to(mm)                     # (b, c, g, r, p, n)

    # 4. what the entering state contributes: decay(l <- start) C_l state
    y_off = torch.einsum("bclgn,bcgrpn->bclgrp", Cc, entering).to(acc) * torch.exp(a_cum).view(b, c, Q, g, r, 1)

    y = (y_diag.to(acc) + y_off).reshape(b, c * Q, h, p)[:, :l]
    return y, state.reshape(b, h, p, n)


@functools.cache
def _compiled():
    return torch.compile(ssd_chunked_fast, dynamic=False)


def ssd_chunked_compiled(x, dt, A, B, C, chunk_size: int, initial_state=None):
    scan = _compiled() if x.is_cuda else ssd_chunked_fast
    return scan(x, dt, A, B, C, chunk_size, initial_state)


def ssd_chunked_recomputed(x, dt, A, B, C, chunk_size: int, initial_state=None):
    return checkpoint(ssd_chunked_compiled, x, dt, A, B, C, chunk_size, initial_state, use_reentrant=False)
