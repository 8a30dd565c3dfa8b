"""Zero-shot editing with a trained generator: regenerate a region, keep the rest.

The family's record says which edits it supports (`Family.edits`) and its sampler does them:

* Next-scale models (VAR, M-VAR): the known tokens are teacher-forced at every scale
  wherever a token's area lies outside the region; only tokens touching the region are
  sampled. Inpainting, outpainting (the region is the border) and class-conditional
  editing (regenerate a region under another class) are the same operation.
* Random-order models (ARPG): the known tokens are decoded first, into the cache, then
  the others in parallel steps; any region. Outpainting onto a larger canvas ("canvas") puts the
  known image in the centre of a larger grid (`registry.with_config`: the same weights with a larger
  2D RoPE grid), which is also how resolution expansion works.
* Raster models (AiM, GPT): tokens come in raster order, so only a bottom band can be
  regenerated from the rows above it (outpainting downward by prefix).

On CUDA edits take the family's fast path: raster models its step sampler, fed the kept rows, then
continuing; next-scale and random-order models their compiled block steps (`compile`).
"""
from __future__ import annotations

import torch

from ..models.registry import family_of, with_config
from .config import SamplingConfig
from .pipeline import check_pair


def image_size_of(model, tokenizer) -> int:
    return model.config.grid * tokenizer.downsample


def border_region(size: int, keep: float) -> torch.Tensor:
    """(size, size) bool: True outside a centred square of side keep*size (outpainting)."""
    if not 0 < keep < 1:
        raise ValueError(f"the kept centre fraction must be in (0, 1), got {keep}")
    region = torch.ones(size, size, dtype=torch.bool)
    k = int(round(size * keep))
    a = (size - k) // 2
    region[a:a + k, a:a + k] = False
    return region


def check_region(region: torch.Tensor, image: torch.Tensor) -> None:
    if region.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask is {tuple(region.shape[-2:])} but the image is {tuple(image.shape[-2:])}: "
                         "they must have the same size")
    if not region.any():
        raise ValueError("the mask selects nothing to regenerate (white = regenerate)")
    if region.all():
        raise ValueError("the mask selects the whole image: nothing is kept (use `sample` instead)")


def _family_for(model, tokenizer, sampling, edit_kind: str):
    family = family_of(model)
    if edit_kind not in family.edits:
        raise ValueError(f"{family.name} models cannot {edit_kind} (they support: {', '.join(sorted(family.edits))})")
    family.check_sampling(sampling)
    check_pair(model, tokenizer)
    return family


def _fast_of(family, model, compile: bool):
    """The family's fast steps for an edit on CUDA (compiled with `compile`), else None."""
    on_cuda = next(model.parameters()).is_cuda
    return family.fast if on_cuda else None, compile and on_cuda


@torch.no_grad()
def edit(model, tokenizer, images: torch.Tensor, region: torch.Tensor, labels: torch.Tensor,
         sampling: SamplingConfig, rng=None, *, compile: bool = False) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1]; region (H, W) bool, True = regenerate; labels (B,).
    Returns the edited images (B, 3, H, W) in [-1, 1]."""
    family = _family_for(model, tokenizer, sampling, "inpaint")
    check_region(region, images)
    size = image_size_of(model, tokenizer)
    if images.shape[-1] != size or images.shape[-2] != size:
        raise ValueError(f"this model works on {size}x{size} images, got {tuple(images.shape[-2:])}")
    fast, compile = _fast_of(family, model, compile)
    return family.sampler.edit(model, tokenizer, images, region, labels, sampling, rng, fast=fast, compile=compile)


@torch.no_grad()
def outpaint_canvas(model, tokenizer, images: torch.Tensor, labels: torch.Tensor, canvas: int,
                    sampling: SamplingConfig, rng=None, *, compile: bool = False) -> torch.Tensor:
    """Put the known image (B, 3, H, W) in the centre of a canvas of `canvas` x `canvas` tokens and
    generate everything around it (ARPG). Returns (B, 3, canvas*f, canvas*f) images."""
    family = _family_for(model, tokenizer, sampling, "canvas")
    grid = images.shape[-1] // tokenizer.downsample
    if canvas <= grid:
        raise ValueError(f"the canvas ({canvas} tokens a side) must be larger than the image ({grid})")
    big = with_config(model, num_tokens=canvas * canvas)
    fast, compile = _fast_of(family, model, compile)
    return family.sampler.edit(model, tokenizer, images, None, labels, sampling, rng, fast=fast, compile=compile,
                               canvas_model=big)
