"""2D rotary position embeddings (LlamaGen's construction, also ARPG's).

Each head's dims form interleaved pairs (2k, 2k+1). The first half of the pairs rotates
by row * theta_k, the second half by col * theta_k, theta_k = base^(-2k / (head_dim / 2)),
k = 0 .. head_dim/4 - 1. Tables are (L, head_dim / 2, 2) = (cos, sin) per pair.

The official tables put `cls_slots` rows of ZEROS in front for the class token(s): a zero
(cos, sin) does not leave the class token's query/key alone, it zeroes them. Official
weights rely on this; `cls_zero=False` gives the identity rotation instead.
"""
from __future__ import annotations

import torch


def rope_2d_table(grid_h: int, grid_w: int, head_dim: int, base: float = 10000.0, cls_slots: int = 0,
                  cls_zero: bool = True) -> torch.Tensor:
    """(cls_slots + grid_h * grid_w, head_dim // 2, 2) raster-order table."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    theta = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))   # (head_dim/4,)
    rows = torch.outer(torch.arange(grid_h).float(), theta)                          # (H, head_dim/4)
    cols = torch.outer(torch.arange(grid_w).float(), theta)                          # (W, head_dim/4)
    angles = torch.cat([rows[:, None].expand(-1, grid_w, -1), cols[None].expand(grid_h, -1, -1)], dim=-1)
    table = torch.stack([angles.cos(), angles.sin()], dim=-1).flatten(0, 1)          # (H*W, head_dim/2, 2)
    cls = torch.zeros(cls_slots, half, 2)
    if not cls_zero:
        cls[..., 0] = 1.0
    return torch.cat([cls, table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, L, H, head_dim), table (L, head_dim/2, 2) or (B, L, head_dim/2, 2) -> rotated x."""
    xp = x.float().unflatten(-1, (-1, 2))                                            # (B, L, H, hd/2, 2)
    t = table[:, :, None] if table.dim() == 4 else table[None, :, None]              # (B|1, L, 1, hd/2, 2)
    cos, sin = t[..., 0], t[..., 1]
    out = torch.stack([xp[..., 0] * cos - xp[..., 1] * sin, xp[..., 1] * cos + xp[..., 0] * sin], dim=-1)
    return out.flatten(-2).type_as(x)
