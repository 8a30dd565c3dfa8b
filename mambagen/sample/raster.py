"""Raster-order decoding for next-token models (AiM; the GPT baseline uses the same protocol).

A model supports: `allocate_cache(batch)`, `prefill(labels, cache, prefix) -> logits (B, V)`,
`step(tokens, cache, index) -> logits (B, V)`, and a config with `num_classes`, `num_tokens`.
CFG doubles the batch as [cond; null]; the guided logits pick one token that is fed
to both halves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .logits import cfg_combine, check_sampling_args, sample_logits


@dataclass
class RasterSample:
    tokens: torch.Tensor                  # (B, N) int64
    step_logits: torch.Tensor | None      # (B, N, V) the logits each token was drawn from, if asked for


@torch.no_grad()
def generate_raster(model, labels: torch.Tensor, *, cfg_scale: float = 1.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
                    prefix: torch.Tensor | None = None, return_logits: bool = False,
                    progress: bool = False) -> RasterSample:
    """Sample token grids for `labels` (B,). `prefix` (B, P) fixes the first P tokens
    (outpainting downward: the model continues the given top rows)."""
    check_sampling_args(cfg_scale, temperature, top_k, top_p)
    cfg = model.config
    B, N = labels.shape[0], cfg.num_tokens
    P = 0 if prefix is None else prefix.shape[1]
    if not 0 <= P < N:
        raise ValueError(f"prefix has {P} tokens; it must be shorter than the {N} tokens of an image")
    guided = cfg_scale != 1.0
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)])
        prefix = None if prefix is None else torch.cat([prefix, prefix])
    cache = model.allocate_cache(labels.shape[0])

    def pick(logits):
        if guided:
            cond, uncond = logits.chunk(2)
            logits = cfg_combine(cond, uncond, cfg_scale)
        return sample_logits(logits, temperature, top_k, top_p, generator), logits

    tokens = torch.empty(B, N, dtype=torch.long, device=labels.device)
    step_logits = None
    if P:
        tokens[:, :P] = prefix[:B]
    logits = model.prefill(labels, cache, prefix)
    for i in tqdm(range(P, N), disable=not progress, desc="tokens", leave=False):
        tok, used = pick(logits)
        tokens[:, i] = tok
        if return_logits:
            if step_logits is None:
                step_logits = used.new_zeros(B, N, used.shape[-1])
            step_logits[:, i] = used
        if i + 1 < N:
            logits = model.step(torch.cat([tok, tok]) if guided else tok, cache, i)
    return RasterSample(tokens, step_logits)
