"""Attention layers: VAR's self-attention with its three uses, and static KV caches.

VAR attention (also M-VAR's): a bias-free qkv projection plus the bias [q_bias, 0, v_bias];
optionally l2-normalised q and k with a learned per-head temperature (`attn_l2_norm`),
else the softmax scale 0.25 / sqrt(head_dim) of the official code. It is used

* dense with a mask (VAR training: block-causal over scales),
* per segment (M-VAR: bidirectional inside each scale, nothing across scales): one
  SDPA call per scale on a contiguous slice, never an L x L mask,
* with a static KV cache written by position (VAR decoding: earlier scales are cached).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class KVCache:
    """Preallocated keys/values (B, H, L_max, head_dim), written at [start, end)."""
    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def allocate(cls, batch: int, heads: int, length: int, head_dim: int, device=None, dtype=None) -> "KVCache":
        shape = (batch, heads, length, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def write(self, start, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, l, hd) at [start, start + l). `start` may be a 0-d device tensor (one slot,
        graph-safe: no host sync), then the whole cache is returned."""
        if torch.is_tensor(start):
            idx = start.reshape(1) + torch.arange(k.shape[2], device=start.device)
            self.k.index_copy_(2, idx, k)
            self.v.index_copy_(2, idx, v)
            return self.k, self.v
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def cached_block_step(block: nn.Module, x, rope, k: torch.Tensor, v: torch.Tensor, start, visible):
    """`block.step(x, rope, KVCache(k, v), start, visible)` with the cache passed as its tensors, so that
    one compiled version of this function serves every block of a model (GPT's blocks, ARPG's
    self-decoder blocks; see sample/fast.py)."""
    return block.step(x, rope, KVCache(k, v), start, visible)


class VARAttention(nn.Module):
    MAX_SCALE_MUL = math.log(100)

    def __init__(self, dim: int, num_heads: int, attn_l2_norm: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        if attn_l2_norm:  # per-head temperature, exp(min(s, log 100)), init 4
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.scale = 1.0 if attn_l2_norm else 0.25 / math.sqrt(self.head_dim)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def qkv(self, x_BLC: torch.Tensor):
        B, L, C = x_BLC.shape
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        q, k, v = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:                                         # (B, H, L, hd) each
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.MAX_SCALE_MUL).exp()
            k = F.normalize(k, dim=-1)
        return q, k, v

    def _attend(self, q, k, v, mask=None):
        drop = self.attn_drop if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=self.scale)
        return o.transpose(1, 2).flatten(2)                           # (B, L, C)

    def forward(self, x_BLC, mask: torch.Tensor | None = None):
        """Dense attention; `mask` is boolean (True = may attend) or additive, broadcast to (B, H, L, L)."""
        q, k, v = self.qkv(x_BLC)
        return self.proj_drop(self.proj(self._attend(q, k, v, mask)))

    def forward_segments(self, x_BLC, seg_lens: list[int]):
        """Bidirectional attention inside each contiguous segment (one per scale), none across."""
        q, k, v = self.qkv(x_BLC)
        outs, s = [], 0
        for n in seg_lens:
            outs.append(self._attend(q[:, :, s:s + n], k[:, :, s:s + n], v[:, :, s:s + n]))
            s += n
        return self.proj_drop(self.proj(torch.cat(outs, dim=1)))

    def forward_cached(self, x_BLC, cache: KVCache, start: int):
        """The tokens at [start, start + L) attend to everything cached before them and to each other."""
        q, k, v = self.qkv(x_BLC)
        k, v = cache.write(start, k, v)
        return self.proj_drop(self.proj(self._attend(q, k, v)))
