"""Class labels -> images: a generator's sampler followed by the tokenizer's decoder."""
from __future__ import annotations

import torch

from .raster import generate_raster


def check_pair(generator, tokenizer) -> None:
    """The generator must model the tokenizer's ids."""
    V = generator.config.vocab_size
    if tokenizer.codebook_size != V:
        raise ValueError(f"tokenizer has {tokenizer.codebook_size} codes but the generator models {V}: "
                         "they were not trained together")


@torch.no_grad()
def sample_images(generator, tokenizer, labels: torch.Tensor, *, cfg_scale: float = 1.0, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, rng: torch.Generator | None = None,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns images (B, 3, H, W) in [-1, 1] and their tokens (B, N)."""
    check_pair(generator, tokenizer)
    res = generate_raster(generator, labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
                          top_p=top_p, generator=rng, progress=progress)
    images = tokenizer.decode(res.tokens, grid=generator.config.grid).clamp(-1, 1)
    return images, res.tokens
