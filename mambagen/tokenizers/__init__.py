"""Tokenizers: images <-> discrete ids. `create_tokenizer(name)` builds any registered config.

* VQ (LlamaGen VQ-f16 design): one token map per image, `encode(images) -> (B, h*w)`.
* MSVQ (VAR design): a pyramid of token maps; `encode_flat(images) -> (B, sum pn^2)`.
"""
from __future__ import annotations

import torch


def list_tokenizers() -> list[str]:
    from .msvq import MSVQ_CONFIGS
    from .vq import VQ_CONFIGS
    return [*VQ_CONFIGS, *MSVQ_CONFIGS]


def create_tokenizer(name: str, **overrides):
    """A randomly initialised tokenizer of a registered config (vq-f16, vq-tiny, msvq-f16, ...)."""
    from .msvq import MSVQ_CONFIGS, create_msvq
    from .vq import VQ_CONFIGS
    from .vq import create_tokenizer as create_vq
    if name in VQ_CONFIGS:
        return create_vq(name, **overrides)
    if name in MSVQ_CONFIGS:
        return create_msvq(name, **overrides)
    raise ValueError(f"unknown tokenizer {name!r}; available: {list_tokenizers()}")


def is_multiscale(tokenizer) -> bool:
    return hasattr(tokenizer, "patch_nums")


def encode_ids(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, N) ids: raster order, or every scale in order for MSVQ."""
    return tokenizer.encode_flat(images) if is_multiscale(tokenizer) else tokenizer.encode(images)


def decode_ids(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """(B, N) ids -> images in [-1, 1]."""
    return tokenizer.decode(ids).clamp(-1, 1)
