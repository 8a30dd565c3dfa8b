"""Class labels -> images: a generator's sampler followed by the tokenizer's decoder.

On CUDA the sampler is the family's fast path (`sample.fast.GraphedRasterSampler` for AiM and
GPT, `sample.graphs.GraphedCallSampler` for VAR, M-VAR and ARPG), built once per model, batch size
and sampling setting and kept for later calls; elsewhere, or with fast=False, the reference loops.
Compiling the block steps as well (compile=True) costs tens of seconds once and pays over many
batches (docs/speed.md).
"""
from __future__ import annotations

import weakref

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


_FAST_SAMPLERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> {setting: sampler}


def fast_sampler(generator, tokenizer, batch: int, *, cfg_scale: float, temperature: float, top_k: int,
                 top_p: float, num_iter: int, compile: bool = False):
    """The family's graphed sampler for this setting (block steps compiled too with `compile` where
    Triton is importable), built on first use."""
    from ..layers.kernels import triton_available
    from .fast import GraphedRasterSampler
    from .graphs import GraphedCallSampler
    opts = dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p)
    compile_blocks = compile and triton_available()      # torch.compile's GPU code is Triton
    key = (batch, id(tokenizer), num_iter, compile_blocks, tuple(sorted(opts.items())))
    samplers = _FAST_SAMPLERS.setdefault(generator, {})
    if key not in samplers:
        if hasattr(generator, "decode_scale"):
            samplers[key] = GraphedCallSampler(generator, batch, quantizer=tokenizer.quantize,
                                               compile_blocks=compile_blocks, **opts)
        elif hasattr(generator, "decode_step"):
            samplers[key] = GraphedCallSampler(generator, batch, num_iter=num_iter, compile_blocks=compile_blocks,
                                               **opts)
        else:
            samplers[key] = GraphedRasterSampler(generator, batch, compile_blocks=compile_blocks, **opts)
    return samplers[key]


@torch.no_grad()
def sample_images(generator, tokenizer, labels: torch.Tensor, *, cfg_scale: float = 1.0, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, rng: torch.Generator | None = None,
                  progress: bool = False, num_iter: int = 64, fast: bool | None = None,
                  compile: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns images (B, 3, H, W) in [-1, 1] and their tokens (B, N).

    `cfg_scale` is the guidance scale (1 = off). ARPG decodes in `num_iter` parallel steps with the
    official linear CFG ramp. Next-scale models (VAR, M-VAR) reach it at the
    last scale, ramping up from 1 at the first, as the official samplers do (their `cfg` = cfg_scale - 1).
    fast: the GPU fast path (None: on CUDA); its random stream differs from the reference loop's
    (noise drawn per step in a graph), its distribution does not. compile: compile its block steps too.
    """
    check_pair(generator, tokenizer)
    num_iter = min(num_iter, generator.config.num_tokens) if hasattr(generator, "decode_step") else num_iter
    if fast is None:
        fast = next(generator.parameters()).is_cuda
    if fast:
        sampler = fast_sampler(generator, tokenizer, labels.shape[0], cfg_scale=cfg_scale, temperature=temperature,
                               top_k=top_k, top_p=top_p, num_iter=num_iter, compile=compile)
        res = sampler.generate(labels, rng)
        if hasattr(generator, "decode_scale"):
            return tokenizer.fhat_to_img(res.f_hat).clamp(-1, 1), torch.cat(res.indices, dim=1)
        tokens = res if torch.is_tensor(res) else res.tokens.clone()
        return tokenizer.decode(tokens, grid=generator.config.grid).clamp(-1, 1), tokens
    if hasattr(generator, "decode_scale"):
        res = generate_scales(generator, tokenizer.quantize, labels, cfg=cfg_scale - 1, temperature=temperature,
                              top_k=top_k, top_p=top_p, generator=rng)
        return tokenizer.fhat_to_img(res.f_hat).clamp(-1, 1), torch.cat(res.indices, dim=1)
    if hasattr(generator, "decode_step"):   # ARPG: random order, many tokens per step
        res = generate_random_order(generator, labels, num_iter=num_iter,
                                    cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                    generator=rng)
    else:
        res = generate_raster(generator, labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
                              top_p=top_p, generator=rng, progress=progress)
    images = tokenizer.decode(res.tokens, grid=generator.config.grid).clamp(-1, 1)
    return images, res.tokens
