"""Class labels -> images: a generator's sampler followed by the tokenizer's decoder."""
from __future__ import annotations

import torch

from .random_order import generate_random_order
from .raster import generate_raster
from .scales import generate_scales


def check_pair(generator, tokenizer) -> None:
    """The generator must model the tokenizer's ids."""
    V = generator.config.vocab_size
    if tokenizer.codebook_size != V:
        raise ValueError(f"tokenizer has {tokenizer.codebook_size} codes but the generator models {V}: "
                         "they were not trained together")
    multiscale = hasattr(tokenizer, "patch_nums")
    if multiscale != hasattr(generator, "decode_scale"):
        raise ValueError(f"a {'multi-scale' if multiscale else 'single-scale'} tokenizer does not fit a "
                         f"{type(generator).__name__} generator")
    if multiscale and tuple(tokenizer.patch_nums) != tuple(generator.config.patch_nums):
        raise ValueError(f"tokenizer scales {tuple(tokenizer.patch_nums)} != generator scales "
                         f"{tuple(generator.config.patch_nums)}")


@torch.no_grad()
def sample_images(generator, tokenizer, labels: torch.Tensor, *, cfg_scale: float = 1.0, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, rng: torch.Generator | None = None,
                  progress: bool = False, num_iter: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns images (B, 3, H, W) in [-1, 1] and their tokens (B, N).

    `cfg_scale` is the guidance scale (1 = off). ARPG decodes in `num_iter` parallel steps with the
    official linear CFG ramp. Next-scale models (VAR, M-VAR) reach it at the
    last scale, ramping up from 1 at the first, as the official samplers do (their `cfg` = cfg_scale - 1).
    """
    check_pair(generator, tokenizer)
    if hasattr(generator, "decode_scale"):
        res = generate_scales(generator, tokenizer.quantize, labels, cfg=cfg_scale - 1, temperature=temperature,
                              top_k=top_k, top_p=top_p, generator=rng)
        return tokenizer.fhat_to_img(res.f_hat).clamp(-1, 1), torch.cat(res.indices, dim=1)
    if hasattr(generator, "decode_step"):   # ARPG: random order, many tokens per step
        res = generate_random_order(generator, labels, num_iter=min(num_iter, generator.config.num_tokens),
                                    cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                    generator=rng)
    else:
        res = generate_raster(generator, labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
                              top_p=top_p, generator=rng, progress=progress)
    images = tokenizer.decode(res.tokens, grid=generator.config.grid).clamp(-1, 1)
    return images, res.tokens
