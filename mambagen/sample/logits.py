"""Logit processing shared by every sampler: CFG, temperature, top-k, top-p, draws.

Pure functions, one copy each. Shapes are (B, V) or (B, L, V); the last dim is the vocabulary.
"""
from __future__ import annotations

import torch


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
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row. temperature 0 (or top_k 1) is greedy. logits (..., V) -> (...)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = top_k_top_p_filter(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat, 1, generator=generator)
    return draws.view(probs.shape[:-1])


def check_sampling_args(cfg_scale: float, temperature: float, top_k: int, top_p: float) -> None:
    """Clear errors for settings that would silently misbehave."""
    if not cfg_scale >= 0:
        raise ValueError(f"cfg scale must be >= 0 (1 = no guidance), got {cfg_scale}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top-k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top-p must be in (0, 1] (1 = off), got {top_p}")
