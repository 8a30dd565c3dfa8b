"""Decoding the SSD recurrence from the token history instead of the state: CPU decoding of short sequences.

Unrolled, the recurrence of `ssd_ref` (state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T, y_t = state_t C_t,
from a zero state) is the SSD paper's quadratic ("attention") form:

    y_t = sum_{s <= t} exp(dt_{s+1} A + ... + dt_t A) (C_t . B_s) dt_s x_s

A decoding step then reads the t kept inputs dt_s x_s (t x headdim per head) instead of reading and writing the
(headdim x d_state) state, which is fewer bytes while t is below a few times d_state. On a CPU, where a step of
the demo is bound by those bytes, its SSM part is ~4x faster for the 64 tokens and the whole token
generation 1.6x (bench/results/cpu_demo_decode.md); on a GPU the fused state kernel is the fast path.
`ssd_ref.ssd_step` is the reference it is tested against (tests/test_mamba2.py).

The decay factors are kept per position and multiplied by each step's decay (as the recurrence multiplies
its state), never differenced from a cumulative sum, so long histories lose no precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ssd_ref import _heads

HISTORY_MAX_PER_STATE = 4   # decode from the history when the sequence is at most this many times d_state


@dataclass
class SSMHistory:
    """What the quadratic form needs of the tokens seen so far, preallocated for `max_len` of them.

    x:      (b, h, max_len, p) dt_s x_s
    B:      (b, g, max_len, n)
    decay:  (b, h, max_len)    exp(dt_{s+1} A + ... + dt_t A): from token s to the latest token t
    filled: tokens seen (positions 0 .. filled - 1 hold them)
    """
    x: torch.Tensor
    B: torch.Tensor
    decay: torch.Tensor
    filled: int = 0

    @classmethod
    def allocate(cls, batch: int, nheads: int, headdim: int, ngroups: int, d_state: int, max_len: int,
                 device=None, dtype=torch.float32) -> "SSMHistory":
        return cls(x=torch.zeros(batch, nheads, max_len, headdim, device=device, dtype=dtype),
                   B=torch.zeros(batch, ngroups, max_len, d_state, device=device, dtype=dtype),
                   decay=torch.zeros(batch, nheads, max_len, device=device, dtype=dtype))

    def reset(self) -> None:
        self.filled = 0

    @property
    def max_len(self) -> int:
        return self.x.shape[2]

    def append_(self, x, dt, A, B) -> None:
        """Record L new tokens: x (b, L, h, p), dt (b, L, h) softplus'd, A (h,), B (b, L, g, n)."""
        L, t0 = x.shape[1], self.filled
        if t0 + L > self.max_len:
            raise ValueError(f"this SSM history holds {self.max_len} tokens; {t0 + L} were fed "
                             "(allocate the cache for the whole sequence)")
        dA = (dt * A).to(self.decay.dtype)                                  # (b, L, h) log-decay of each step
        self.decay[:, :, :t0].mul_(torch.exp(dA.sum(1))[..., None])        # as the recurrence decays its state
        tail = F.pad(dA[:, 1:].flip(1).cumsum(1).flip(1), (0, 0, 0, 1))    # within the block: s -> its last token
        self.decay[:, :, t0:t0 + L] = torch.exp(tail).transpose(1, 2)
        self.x[:, :, t0:t0 + L] = (dt[..., None] * x).to(self.x.dtype).transpose(1, 2)
        self.B[:, :, t0:t0 + L] = B.to(self.B.dtype).transpose(1, 2)
        self.filled = t0 + L


def history_step_(hist: SSMHistory, x, dt, A, B, C) -> torch.Tensor:
    """One token, as `ssd_ref.ssd_step` from the history: x (b, h, p), dt (b, h), B, C (b, g, n) -> y (b, h, p).
    Records the token in `hist`."""
    b, h, _, p = hist.x.shape
    g, n = hist.B.shape[1], hist.B.shape[3]
    hist.append_(x[:, None], dt[:, None], A, B[:, None])
    t = hist.filled
    CB = torch.bmm(hist.B[:, :, :t].reshape(b * g, t, n), C.to(hist.B.dtype).reshape(b * g, n, 1))  # C_t . B_s
    w = (hist.decay[:, :, :t] * _heads(CB.view(b, g, t), h)).view(b * h, 1, t)   # (b h, 1, t)
    return torch.bmm(w, hist.x.view(b * h, -1, p)[:, :t]).view(b, h, p)
