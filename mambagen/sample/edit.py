"""Zero-shot editing with a trained generator: regenerate a region, keep the rest.

* Next-scale models (VAR, M-VAR): the known tokens are teacher-forced at every scale
  wherever a token's area lies outside the region; only tokens touching the region are
  sampled. Inpainting, outpainting (the region is the border) and class-conditional
  editing (regenerate a region under another class) are the same operation.
* Random-order models (ARPG): the known tokens are decoded first, into the cache, then
  the others in parallel steps; any region. Outpainting puts the known image on a larger
  canvas (`with_grid`: the same weights with a larger 2D RoPE grid), which is also how
  resolution expansion works.
* Raster models (AiM, GPT): tokens come in raster order, so only a bottom band can be
  regenerated from the rows above it (outpainting downward by prefix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .random_order import generate_random_order
from .raster import generate_raster
from .scales import generate_scales, scale_masks


def image_size_of(generator, tokenizer) -> int:
    return generator.config.grid * tokenizer.downsample


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


@torch.no_grad()
def edit(generator, tokenizer, images: torch.Tensor, region: torch.Tensor, labels: torch.Tensor, *,
         cfg_scale: float = 2.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
         rng: torch.Generator | None = None) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1]; region (H, W) bool, True = regenerate; labels (B,).
    Returns the edited images (B, 3, H, W) in [-1, 1]."""
    check_region(region, images)
    size = image_size_of(generator, tokenizer)
    if images.shape[-1] != size or images.shape[-2] != size:
        raise ValueError(f"this model works on {size}x{size} images, got {tuple(images.shape[-2:])}")
    if hasattr(generator, "decode_scale"):
        known = tokenizer.encode(images)
        regen = scale_masks(region, generator.config.patch_nums)
        res = generate_scales(generator, tokenizer.quantize, labels, cfg=cfg_scale - 1, temperature=temperature,
                              top_k=top_k, top_p=top_p, generator=rng, known=known, regenerate=regen)
        return tokenizer.fhat_to_img(res.f_hat).clamp(-1, 1)
    grid = generator.config.grid
    keep = F.adaptive_max_pool2d(region.float()[None, None], (grid, grid))[0, 0] == 0          # (grid, grid)
    if hasattr(generator, "decode_step"):   # ARPG: known tokens first, then the rest in parallel
        ids = tokenizer.encode(images)
        res = generate_random_order(generator, labels, num_iter=min(64, grid * grid), cfg_scale=cfg_scale,
                                    temperature=temperature, top_k=top_k, top_p=top_p, generator=rng,
                                    known=ids, known_mask=keep.flatten()[None].expand(len(ids), -1))
        return tokenizer.decode(res.tokens, grid=grid).clamp(-1, 1)
    # raster: keep every token row above the first row the region touches
    first = int((~keep).any(1).nonzero()[0])
    ids = tokenizer.encode(images)
    res = generate_raster(generator, labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
                          top_p=top_p, generator=rng, prefix=ids[:, :first * grid])
    return tokenizer.decode(res.tokens, grid=grid).clamp(-1, 1)


def with_grid(generator, grid: int):
    """The same ARPG weights on a `grid` x `grid` token canvas (outpainting, resolution expansion):
    positions enter only through the 2D RoPE table, which extends to any grid."""
    if not hasattr(generator, "decode_step"):
        raise ValueError(f"{type(generator).__name__} has learned absolute positions: its canvas cannot grow "
                         "(only ARPG's 2D RoPE extends)")
    from ..models.registry import build_model
    cfg = {**generator.config.to_dict(), "num_tokens": grid * grid}
    big = build_model("arpg", cfg).to(next(generator.parameters()).device)
    big.load_state_dict(generator.state_dict())
    return big.eval()


@torch.no_grad()
def outpaint_canvas(model, tokenizer, images: torch.Tensor, labels: torch.Tensor, canvas: int, **sampling):
    """ARPG: put the known image (B, 3, H, W) in the centre of a canvas of `canvas` x `canvas` tokens and
    generate everything around it. Returns (B, 3, canvas*f, canvas*f) images."""
    grid = images.shape[-1] // tokenizer.downsample
    if canvas <= grid:
        raise ValueError(f"the canvas ({canvas} tokens a side) must be larger than the image ({grid})")
    big = with_grid(model, canvas)
    ids = tokenizer.encode(images).view(-1, grid, grid)
    a = (canvas - grid) // 2
    known = torch.zeros(len(ids), canvas, canvas, dtype=torch.long, device=ids.device)
    mask = torch.zeros(canvas, canvas, dtype=torch.bool, device=ids.device)
    known[:, a:a + grid, a:a + grid] = ids
    mask[a:a + grid, a:a + grid] = True
    res = generate_random_order(big, labels, num_iter=min(64, canvas * canvas), known=known.flatten(1),
                                known_mask=mask.flatten()[None].expand(len(ids), -1), **sampling)
    return tokenizer.decode(res.tokens, grid=canvas).clamp(-1, 1)
