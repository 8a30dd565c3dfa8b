"""Raster-order decoding for next-token models (AiM; the GPT baseline uses the same protocol).

A model supports: `allocate_cache(batch)`, `prefill(labels, cache, prefix) -> logits (B, V)`,
`step(tokens, cache, index) -> logits (B, V)`, and a config with `num_classes`, `num_tokens`.
CFG doubles the batch as [cond; null]; the guided logits pick one token that is fed
to both halves. LlamaGen's `cfg_interval` guides only tokens 0 .. interval + 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import SamplingConfig
from .logits import cfg_combine, draw_tokens


@dataclass
class RasterSample:
    tokens: torch.Tensor                  # (B, N) int64
    step_logits: torch.Tensor | None      # (B, N, V) the logits each token was drawn from, if asked for


def guided_logits(logits: torch.Tensor, sampling: SamplingConfig, t) -> torch.Tensor:
    """The [cond; null] logits of token t -> the logits it is drawn from (cfg_interval: conditional only
    after token interval + 1, as the official LlamaGen loop)."""
    cond, uncond = logits.chunk(2)
    if sampling.cfg_interval > -1 and t > sampling.cfg_interval + 1:
        return cond
    return cfg_combine(cond, uncond, sampling.cfg_scale)


@torch.no_grad()
def generate_raster(model, labels: torch.Tensor, sampling: SamplingConfig, rng=None, *,
                    prefix: torch.Tensor | None = None, return_logits: bool = False,
                    progress: bool = False) -> RasterSample:
    """Sample token grids for `labels` (B,). `prefix` (B, P) fixes the first P tokens
    (outpainting downward: the model continues the given top rows). Token i is draw i of `rng`."""
    cfg = model.config
    B, N = labels.shape[0], cfg.num_tokens
    P = 0 if prefix is None else prefix.shape[1]
    if not 0 <= P < N:
        raise ValueError(f"prefix has {P} tokens; it must be shorter than the {N} tokens of an image")
    guided = sampling.guided
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)])
        prefix = None if prefix is None else torch.cat([prefix, prefix])
    cache = model.allocate_cache(labels.shape[0])

    tokens = torch.empty(B, N, dtype=torch.long, device=labels.device)
    step_logits = None
    if P:
        tokens[:, :P] = prefix[:B]
    logits = model.prefill(labels, cache, prefix)
    for i in tqdm(range(P, N), disable=not progress, desc="tokens", leave=False):
        used = guided_logits(logits, sampling, i) if guided else logits
        tok = draw_tokens(used, sampling, rng, i)
        tokens[:, i] = tok
        if return_logits:
            if step_logits is None:
                step_logits = used.new_zeros(B, N, used.shape[-1])
            step_logits[:, i] = used
        if i + 1 < N:
            logits = model.step(torch.cat([tok, tok]) if guided else tok, cache, i)
    return RasterSample(tokens, step_logits)


def kept_tokens(region: torch.Tensor, grid: int) -> torch.Tensor:
    """Region to regenerate (H, W) bool -> (grid, grid) bool: the tokens whose area lies wholly outside it."""
    return torch.nn.functional.adaptive_max_pool2d(region.float()[None, None], (grid, grid))[0, 0] == 0


def token_cells(region: torch.Tensor, grid: int) -> torch.Tensor:
    """(H, W) bool region -> (H, W) bool: the pixels of every token cell it touches."""
    f = region.shape[0] // grid
    return (~kept_tokens(region, grid)).repeat_interleave(f, 0).repeat_interleave(f, 1)


class RasterParadigm:
    """Next-token models in raster order (AiM, GPT) for their family records: the reference loop,
    the graphed step sampler (`sample.fast`) with the family's fast decode, images, and the edit
    raster order allows (a bottom band, continued from the rows above it)."""
    name = "raster"

    def reference(self, model, tokenizer, labels, sampling, rng, progress=False) -> torch.Tensor:
        return generate_raster(model, labels, sampling, rng, progress=progress).tokens

    def fast(self, model, tokenizer, batch, sampling, fast, *, rows=False, compile=False, graph=True):
        from .fast import GraphedRasterSampler
        return GraphedRasterSampler(model, fast, batch, sampling, rows=rows, compile_blocks=compile, graph=graph)

    def images(self, model, tokenizer, result):
        """(images (B, 3, H, W) in [-1, 1], tokens (B, N)) of a sampler's result."""
        from ..tokenizers import decode_ids
        return decode_ids(tokenizer, result, model.config.grid), result

    def tokens(self, result) -> torch.Tensor:
        return result

    def regenerated(self, region: torch.Tensor, grid: int) -> torch.Tensor:
        """The pixels an edit of `region` (H, W) really redraws: every row from the first token row it touches."""
        first = int((~kept_tokens(region, grid)).any(1).nonzero()[0])
        out = torch.zeros_like(region)
        out[first * (region.shape[0] // grid):] = True
        return out

    def edit(self, model, tokenizer, images, region, labels, sampling, rng, fast=None, compile=False):
        """Regenerate every token row from the first one the region (H, W) bool touches. fast: the family's
        fast decode (on CUDA): the step sampler is fed the kept rows, then continues."""
        from .streams import RowStreams
        grid = model.config.grid
        first = int((~kept_tokens(region, grid)).any(1).nonzero()[0])
        prefix = tokenizer.encode(images)[:, :first * grid]
        if fast is None:
            tokens = generate_raster(model, labels, sampling, rng, prefix=prefix).tokens
        else:
            sampler = self.fast(model, tokenizer, len(labels), sampling, fast, rows=isinstance(rng, RowStreams),
                                compile=compile)
            tokens = sampler.generate(labels, rng, prefix=prefix)
        return self.images(model, tokenizer, tokens)[0]


RASTER = RasterParadigm()
