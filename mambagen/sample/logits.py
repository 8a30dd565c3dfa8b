"""Logit processing shared by every sampler: CFG, temperature, top-k, top-p, draws.

Pure functions, one copy each. Shapes are (B, V) or (B, L, V); the last dim is the vocabulary.
Draws come from the caller's `rng`: a `torch.Generator` (one stream for the batch, multinomial:
the reference loops' stream) or a `RowStreams` (one stream per row, Gumbel-max; `sample.streams`).
"""
from __future__ import annotations

import torch

from .streams import RowStreams


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance as in AiM/LlamaGen: uncond + (cond - uncond) * scale.

    scale 1 returns the conditional logits; VAR's form (1 + t) * cond - t * uncond is scale = 1 + t.
    """
    return uncond + (cond - uncond) * scale


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set of mass >= top_p.

    top_k = 0 and top_p = 1 disable the filters; the most likely token always survives.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p          # mass before this token already >= top_p
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  rng: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row with a torch.Generator. temperature 0 (or top_k 1) is greedy. (..., V) -> (...)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = top_k_top_p_filter(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat, 1, generator=rng)
    return draws.view(probs.shape[:-1])


def gumbel_max(logits: torch.Tensor, uniform: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """argmax(filtered(logits) / T + g), g = -log(-log(u)) with u ~ U(0, 1) given: the same distribution as
    `sample_logits`, from noise the caller drew (inside a CUDA graph, or per row)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = top_k_top_p_filter(logits.float() / temperature, top_k, top_p)
    return (logits - torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))).argmax(-1)


def draw_tokens(logits: torch.Tensor, sampling, rng, draw) -> torch.Tensor:
    """Tokens (B, ...) from guided logits (B, ..., V) under `sampling` (a SamplingConfig).
    `draw` numbers this draw within the call (RowStreams: the counter of each row's stream)."""
    if isinstance(rng, RowStreams) and not sampling.greedy:
        return gumbel_max(logits, rng.uniform(draw, tuple(logits.shape[1:])), sampling.temperature,
                          sampling.top_k, sampling.top_p)
    return sample_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p, rng)


def uniforms(rng, draw, shape: tuple[int, ...], device) -> torch.Tensor:
    """Uniforms (B, *shape[1:]) in (0, 1) from either kind of rng (orders, VAR's soft codes)."""
    if isinstance(rng, RowStreams):
        return rng.uniform(draw, tuple(shape[1:]))
    return torch.rand(shape, generator=rng, device=device)
