"""The SSD scan of Mamba2 in plain PyTorch: the readable reference (the spec).

State space per head h, with a scalar decay per step (Mamba2's "scalar A"):

    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T      (headdim x d_state)
    y_t     = state_t C_t

Shapes: x (b, l, h, p), dt (b, l, h) already softplus'd, A (h,) negative,
B and C (b, l, g, n) with g groups shared by h/g consecutive heads,
state (b, h, p, n). Three ways to evaluate it, which must agree:

* `ssd_chunked`    - chunked parallel form for training and prefill (the SSD paper's
                     four steps); takes an initial state and returns the final state.
* `ssd_step`       - one token on an explicit state, for decoding; `ssd_step_` the same in place
                     (CPU decoding of long sequences: the state is the largest tensor a step touches,
                     so it is read and written twice instead of ~8 times; the CUDA kernel goes down to
                     once; short ones decode from the token history instead, `ssd_history`).
* `ssd_sequential` - the naive recurrence, token by token; tests only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _heads(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(..., g, n) -> (..., h, n): each group serves h/g consecutive heads."""
    return t.repeat_interleave(nheads // t.shape[-2], dim=-2)


def segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, and -inf above the diagonal.

    exp(segsum(a)) is the decay from step j to step i. Summing the masked
    entries directly (rather than differencing a cumsum) keeps it exact.
    """
    T = a.shape[-1]
    a = a[..., :, None].expand(*a.shape, T)                       # (..., T, T): [i, j] = a_i
    below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    s = a.masked_fill(~below, 0).cumsum(dim=-2)
    on_or_below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return s.masked_fill(~on_or_below, float("-inf"))


def ssd_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """Chunked SSD scan. Returns y (b, l, h, p) and the final state (b, h, p, n).

    Computed in float32 (or float64 when given float64) whatever the input dtype.
    """
    b, l, h, p = x.shape
    chunk_size = min(chunk_size, l)   # the result does not depend on the chunk; never pad a short input up
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    B, C = _heads(B, h), _heads(C, h)                                 # (b, l, h, n)
    pad = -l % chunk_size
    if pad:  # zero steps: decay exp(0) = 1 and no input, so the state passes through unchanged
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    c = x.shape[1] // chunk_size
    X = (x * dt[..., None]).view(b, c, chunk_size, h, p)              # dt-scaled input
    Bc, Cc = B.view(b, c, chunk_size, h, -1), C.view(b, c, chunk_size, h, -1)
    a = (dt * A).view(b, c, chunk_size, h).permute(0, 3, 1, 2)        # (b, h, c, q) log-decay per step
    a_cum = a.cumsum(dim=-1)

    # 1. inside each chunk: attention-like quadratic form with the decay mask
    #    (three explicit steps: one 4-operand einsum can materialise a (q, q, h, n) product)
    Lmask = torch.exp(segsum(a)).transpose(1, 2)                      # (b, c, h, q, q)
    scores = torch.einsum("bclhn,bcshn->bchls", Cc, Bc) * Lmask      # (b, c, h, q, q)
    y_diag = torch.einsum("bchls,bcshp->bclhp", scores, X)

    # 2. the state each chunk produces on its own (decayed to the chunk's end)
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)                 # (b, h, c, q)
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_to_end, X)

    # 3. carry states across chunks (a short recurrence over c, written as one product)
    if initial_state is None:
        initial_state = torch.zeros(b, h, p, Bc.shape[-1], dtype=dtype, device=x.device)
    states = torch.cat([initial_state.to(dtype)[:, None], chunk_states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))   # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    states, final_state = states[:, :-1], states[:, -1]

    # 4. what the carried-in state contributes to each output
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, torch.exp(a_cum))

    y = (y_diag + y_off).reshape(b, c * chunk_size, h, p)[:, :l]
    return y, final_state


def ssd_step(state, x, dt, A, B, C):
    """One token. state (b, h, p, n), x (b, h, p), dt (b, h), B/C (b, g, n).

    Returns y (b, h, p) and the new state (a new tensor; callers copy it into their cache).
    """
    h = x.shape[1]
    B, C = _heads(B, h).to(state.dtype), _heads(C, h).to(state.dtype)   # (b, h, n)
    dt = dt.to(state.dtype)
    decay = torch.exp(dt * A.to(state.dtype))                            # (b, h)
    state = state * decay[..., None, None] + (dt[..., None] * x.to(state.dtype))[..., None] * B[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, C)
    return y, state


def ssd_step_(state, x, dt, A, B, C):
    """`ssd_step` updating `state` (b, h, p, n), contiguous, in place; returns y (b, h, p)."""
    b, h, p, n = state.shape
    B, C = _heads(B, h).to(state.dtype), _heads(C, h).to(state.dtype)   # (b, h, n)
    dt = dt.to(state.dtype)
    flat = state.view(b * h, p, n)
    state.mul_(torch.exp(dt * A.to(state.dtype))[..., None, None])                   # decay
    flat.baddbmm_((dt[..., None] * x.to(state.dtype)).reshape(b * h, p, 1), B.reshape(b * h, 1, n))  # + dt x B^T
    return torch.bmm(flat, C.reshape(b * h, n, 1)).view(b, h, p)                     # y = state C


def ssd_sequential(x, dt, A, B, C, initial_state=None):
    """The recurrence, one step at a time. Tests only."""
    b, l, h, p = x.shape
    state = initial_state if initial_state is not None else x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(l):
        y, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1), state
