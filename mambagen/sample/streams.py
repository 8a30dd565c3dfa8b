"""Per-row random streams: every image of a batch draws from its own stream.

`RowStreams(seeds)` is counter-based: draw `d` of row b is a pure function of (seeds[b], d) -
splitmix64 in int64 tensor arithmetic, exact on every device - so an image depends on its seed only,
not on its batch mates, the batch size, the number of ranks or the device, and the draws can be
computed inside a CUDA graph (the seeds are a tensor the graph reads, `d` an int or a 0-d tensor).
The samplers take either a `torch.Generator` (one stream for the batch: the reference loops' own
draws) or a `RowStreams`; `sample.logits.draw_tokens` turns uniforms into tokens by Gumbel-max.
"""
from __future__ import annotations

import torch

_GOLDEN = -7046029254386353131          # 0x9e3779b97f4a7c15 as int64
_M1 = -4658895280553007687              # 0xbf58476d1ce4e5b9
_M2 = -7723592293110705685              # 0x94d049bb133111eb
_DRAW = 0x2545F4914F6CDD1D


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def _splitmix64_int(x: int) -> int:
    """`splitmix64` on a Python int (mod 2^64), returned as the int64 it is bit for bit."""
    m = (1 << 64) - 1
    x &= m
    x = ((x ^ (x >> 30)) * (_M1 & m)) & m
    x = ((x ^ (x >> 27)) * (_M2 & m)) & m
    x ^= x >> 31
    return x - (1 << 64) if x >> 63 else x


def _draw_key(draw, device) -> torch.Tensor | int:
    """The key of draw `draw`: from a Python int on the host (no device copy, so it can be recorded in a CUDA
    graph), or from a 0-d device tensor (a graph's step counter) on the device; the same value either way."""
    if isinstance(draw, int):
        return _splitmix64_int(draw * _DRAW + _GOLDEN)
    return splitmix64(draw.to(device=device, dtype=torch.long) * _DRAW + _GOLDEN)


class RowStreams:
    """rng = RowStreams.from_seeds([s0, s1, ...], device); u = rng.uniform(draw, (k, V)) -> (B, k, V)."""

    def __init__(self, seeds: torch.Tensor):
        if seeds.dim() != 1 or seeds.dtype != torch.long:
            raise ValueError(f"RowStreams needs a (B,) int64 tensor of seeds, got {tuple(seeds.shape)} {seeds.dtype}")
        self.seeds = seeds

    @classmethod
    def from_seeds(cls, seeds, device=None) -> "RowStreams":
        return cls(torch.as_tensor([int(s) & (2 ** 63 - 1) for s in seeds], dtype=torch.long, device=device))

    def __len__(self) -> int:
        return self.seeds.shape[0]

    def bits(self, draw, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) int64 hashes of (seed, draw, element)."""
        n = 1
        for d in shape:
            n *= d
        key = splitmix64(splitmix64(self.seeds + _GOLDEN) ^ _draw_key(draw, self.seeds.device))     # (B,)
        element = torch.arange(n, dtype=torch.long, device=key.device) * _GOLDEN
        return splitmix64(key[:, None] + element).view(len(self), *shape)

    def uniform(self, draw, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape) float32 uniforms in (0, 1), never 0 or 1: 24 random bits each."""
        return (_srl(self.bits(draw, shape), 40).float() + 0.5) * 2.0 ** -24

    def select(self, rows) -> "RowStreams":
        return RowStreams(self.seeds[rows])
