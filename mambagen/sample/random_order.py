"""Randomized parallel decoding for ARPG: a random order, several tokens per step.

A model supports `allocate_cache(batch)`, `prefill(labels, query_positions, cache, known,
known_positions)`, `decode_step(tokens, positions, query_positions, cache, start)` (see
`models.arpg`) and a config with `num_classes`, `num_tokens`, `vocab_size`.

Step k predicts the next `tokens_per_step[k]` positions of the order at once; their tokens are
fed to the model at step k + 1. The schedules are pure functions of integers, computed with the
official arithmetic:

    mask ratio r_k = arccos((k + 1) / T) / (pi / 2)      ('arccos')
                   = cos(pi / 2 * (k + 1) / T)           ('cosine')
    still masked after step k: m = max(1, min(N - done - 1, int(N * r_k)))
    tokens at step k: N - done - m (the last step takes all the rest)

    cfg scale at step k: 1 + (g - 1) * decided_after_step_k / N   ('linear')
                         g                                        ('constant')

CFG doubles the batch as [cond; null] with identical content inputs; the guided logits
choose the tokens fed to both halves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..layers.embed import check_labels
from .config import SamplingConfig
from .logits import cfg_combine, draw_tokens, uniforms
from .raster import token_cells
from .streams import RowStreams


# ---------------------------------------------------------------------------- schedules
def _arccos_ratio(step: int, num_iter: int) -> float:
    return float(np.arccos(1.0 * (step + 1) / num_iter) / (math.pi * 0.5))


def _cosine_ratio(step: int, num_iter: int) -> float:
    return float(np.cos(math.pi / 2.0 * (step + 1) / num_iter))


# fraction of the tokens still masked after step `step` of `num_iter`
MASK_RATIOS = {"arccos": _arccos_ratio, "cosine": _cosine_ratio}


def _linear_cfg(scale: float, decided: int, total: int) -> float:
    return 1.0 + (scale - 1.0) * decided / total


def _constant_cfg(scale: float, decided: int, total: int) -> float:
    return scale


# guidance scale of a step from the final scale and the tokens decided once the step is done
CFG_SCHEDULES = {"linear": _linear_cfg, "constant": _constant_cfg}


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}")
    return table[name]


def tokens_per_step(num_tokens: int, num_iter: int, schedule: str = "arccos") -> list[int]:
    """How many tokens each of `num_iter` steps decides; sums to `num_tokens`.

    With num_iter > num_tokens the schedule reaches one masked token early and the steps in
    between decide nothing (entries 0), exactly as the official arithmetic does."""
    ratio = _lookup(MASK_RATIOS, schedule, "sample schedule")
    if num_tokens < 1 or num_iter < 1:
        raise ValueError(f"need num_tokens >= 1 and num_iter >= 1, got {num_tokens} and {num_iter}")
    counts, done = [], 0
    for step in range(num_iter):
        masked = max(1, min(num_tokens - done - 1, int(num_tokens * ratio(step, num_iter))))
        k = num_tokens - done if step == num_iter - 1 else num_tokens - done - masked
        counts.append(k)
        done += k
    return counts


def cfg_schedule(counts: list[int], scale: float, mode: str = "linear") -> list[float]:
    """Guidance scale per step for the tokens-per-step `counts` ('linear' counts the tokens of the
    current step: the last step gets the full scale)."""
    rule = _lookup(CFG_SCHEDULES, mode, "cfg schedule")
    total, decided, out = sum(counts), 0, []
    for k in counts:
        decided += k
        out.append(rule(scale, decided, total))
    return out


# ---------------------------------------------------------------------------- orders
ORDER_DRAW = -1   # the draw number of the order in each row's stream (steps are draws 0, 1, ...)


def random_order(num_tokens: int, batch: int = 1, rng=None, device=None) -> torch.Tensor:
    """(batch, N) random permutations of the grid positions (batch 1: one order for everyone)."""
    device = device if device is not None else getattr(rng, "device", None)
    return uniforms(rng, ORDER_DRAW, (batch, num_tokens), device).argsort(dim=1)


def known_first(order: torch.Tensor, known_mask: torch.Tensor) -> torch.Tensor:
    """Reorder each row of `order` (B, N) so the known positions come first; both groups keep their
    relative order."""
    unknown = (~known_mask).gather(1, order).to(torch.int8)          # (B, N) in order
    return order.gather(1, unknown.argsort(dim=1, stable=True))


@dataclass
class RandomOrderSample:
    tokens: torch.Tensor                  # (B, N) int64, raster order
    orders: torch.Tensor                  # (B, N) grid positions in generation order (known ones first)
    tokens_per_step: list[int]            # generated tokens per step (sums to N - num_known)
    cfg_scales: list[float]               # guidance scale per step
    step_logits: torch.Tensor | None      # (B, N - num_known, V) guided logits, generation order, if asked for
    num_known: int = 0


@torch.no_grad()
def generate_random_order(model, labels: torch.Tensor, sampling: SamplingConfig, rng=None, *,
                          order: torch.Tensor | None = None, per_sample_order: bool = False,
                          known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
                          cache=None, return_logits: bool = False, block_steps=None) -> RandomOrderSample:
    """Sample token grids for `labels` (B,) in `sampling.steps` parallel steps (`sampling.schedule`,
    guidance by `sampling.cfg_schedule`); step k is draw k of `rng`.

    order: (N,) or (B, N) grid positions in generation order; default one random order for the
        whole batch (official), or one per sample with `per_sample_order` or per-row streams
        (`RowStreams`: a row's order is its own stream's), drawn from `rng`.
    known / known_mask: (B, N) token ids and a bool mask of the ids to keep (inpainting; for
        outpainting the canvas is larger than the known image and the mask is False outside it).
        Every sample must know the same number K < N of tokens. The known tokens go first in the
        order: they are written into the cache in one causal pass with the class token, then the
        N - K others are decoded by the schedule (which, with its linear CFG, runs over those).
    Resolution expansion needs nothing here: build the model with a larger `num_tokens`.
    cache: a preallocated `model.allocate_cache(2B or B)` to reuse (it is overwritten).
    block_steps: the model's block steps to use instead of its own (compiled ones, `models.arpg`).
    """
    mcfg = model.config
    check_labels(labels, mcfg.num_classes)
    B, N, device = labels.shape[0], mcfg.num_tokens, labels.device

    # 1. the order: given, or drawn (one for the batch unless per row)
    drawn = order is None
    if drawn:
        per_row = per_sample_order or isinstance(rng, RowStreams)
        order = random_order(N, B if per_row else 1, rng, device)
    order = order.to(device)
    if order.shape[-1] != N or order.dim() not in (1, 2):
        raise ValueError(f"order must be (N,) or (B, N) with N = {N}, got {tuple(order.shape)}")
    order = order.expand(B, N)
    capturing = order.is_cuda and torch.cuda.is_current_stream_capturing()   # no host sync in a graph
    if not (drawn or capturing) and not torch.equal(order.sort(dim=1).values,
                                                    torch.arange(N, device=device).expand(B, N)):
        raise ValueError("order must be a permutation of the grid positions 0 .. N-1")

    # 2. known tokens first
    K = 0
    if known_mask is not None:
        if known is None or known.shape != (B, N) or known_mask.shape != (B, N):
            raise ValueError(f"known and known_mask must both be (B, N) = ({B}, {N})")
        counts = known_mask.sum(dim=1)
        K = int(counts[0])
        if not bool((counts == K).all()):
            raise ValueError("every sample must know the same number of tokens")
        if K >= N:
            raise ValueError("every token is known: nothing to generate")
        if K and not bool(((known[known_mask] >= 0) & (known[known_mask] < mcfg.vocab_size)).all()):
            raise ValueError(f"known token ids must lie in [0, {mcfg.vocab_size})")
        order = known_first(order, known_mask.to(device))

    # 3. schedules over the tokens to generate
    counts = tokens_per_step(N - K, sampling.steps, sampling.schedule)
    scales = cfg_schedule(counts, sampling.cfg_scale, sampling.cfg_schedule)
    guided = any(s != 1.0 for s in scales)

    def both(t: torch.Tensor) -> torch.Tensor:                   # the CFG batch [cond; null]
        return torch.cat([t, t]) if guided else t

    all_labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)]) if guided else labels
    if cache is None:
        cache = model.allocate_cache(all_labels.shape[0])

    tokens = known.clone().to(device) if K else torch.zeros(B, N, dtype=torch.long, device=device)
    step_logits = None
    done, slot, fed = K, 0, None                                  # fed: (tokens, positions) of the last step
    for step, (k, scale) in enumerate(zip(counts, scales)):
        if k == 0:                                                # the schedule can idle when num_iter > N - K
            continue
        targets = order[:, done:done + k]                         # (B, k) grid positions to predict
        if fed is None:
            known_pos = order[:, :K]
            logits = model.prefill(all_labels, both(targets), cache,
                                   both(tokens.gather(1, known_pos)) if K else None, both(known_pos) if K else None,
                                   block_steps=block_steps)
            slot = 1 + K
        else:
            logits = model.decode_step(both(fed[0]), both(fed[1]), both(targets), cache, slot, block_steps=block_steps)
            slot += fed[0].shape[1]
        if guided:
            cond, uncond = logits.chunk(2)
            logits = cfg_combine(cond, uncond, scale)             # (B, k, V)
        new = draw_tokens(logits, sampling, rng, step)                # (B, k)
        tokens.scatter_(1, targets, new)
        if return_logits:
            if step_logits is None:
                step_logits = logits.new_zeros(B, N - K, logits.shape[-1])
            step_logits[:, done - K:done - K + k] = logits
        fed = (new, targets)
        done += k
    return RandomOrderSample(tokens, order.clone(), counts, scales, step_logits, K)


class RandomOrderParadigm:
    """Random-order parallel decoding (ARPG) for its family record: the reference call, the whole call
    as one CUDA graph with the family's compiled block steps, images, and editing any region (known
    tokens decoded first) or a larger canvas (outpainting, resolution expansion)."""
    name = "random-order"

    regenerated = staticmethod(token_cells)   # an edit redraws every token cell its region touches

    @staticmethod
    def steps(model, sampling) -> SamplingConfig:
        """The setting with its step count capped at the tokens of an image."""
        return sampling.replace(steps=min(sampling.steps, model.config.num_tokens))

    def _call(self, sampling):
        return lambda model, labels, rng, block_steps: generate_random_order(
            model, labels, self.steps(model, sampling), rng, block_steps=block_steps)

    def reference(self, model, tokenizer, labels, sampling, rng, progress=False) -> RandomOrderSample:
        return generate_random_order(model, labels, self.steps(model, sampling), rng)

    def fast(self, model, tokenizer, batch, sampling, fast, *, rows=False, compile=False, graph=True):
        from .graphs import GraphedCallSampler
        from .graphs import NoFastSetting
        steps = NoFastSetting() if fast is None else fast(model, compile_blocks=compile)
        return GraphedCallSampler(model, batch, self._call(sampling), steps, rows=rows)

    def images(self, model, tokenizer, result: RandomOrderSample):
        from ..tokenizers import decode_ids
        return decode_ids(tokenizer, result.tokens, model.config.grid), self.tokens(result)

    def tokens(self, result: RandomOrderSample) -> torch.Tensor:
        return result.tokens.clone()     # a graphed call's tokens are its own buffer

    def edit(self, model, tokenizer, images, region, labels, sampling, rng, fast=None, compile=False,
             canvas_model=None):
        """region (H, W) bool, True = regenerate: the tokens outside it are kept, decoded first. canvas_model:
        the same weights on a larger grid, the image in its centre (outpainting onto a larger canvas)."""
        from ..tokenizers import decode_ids
        from .raster import kept_tokens
        ids = tokenizer.encode(images)
        target = model if canvas_model is None else canvas_model
        steps = None if fast is None else fast(target, compile_blocks=compile)
        G = target.config.grid
        if canvas_model is not None:
            g = images.shape[-1] // tokenizer.downsample
            a = (G - g) // 2
            known = torch.zeros(len(ids), G, G, dtype=torch.long, device=ids.device)
            keep = torch.zeros(G, G, dtype=torch.bool, device=ids.device)
            known[:, a:a + g, a:a + g] = ids.view(-1, g, g)
            keep[a:a + g, a:a + g] = True
            ids = known.flatten(1)
        else:
            keep = kept_tokens(region, model.config.grid)
        res = generate_random_order(target, labels, self.steps(target, sampling), rng, known=ids,
                                    known_mask=keep.flatten()[None].expand(len(ids), -1),
                                    block_steps=None if steps is None else steps.block_steps)
        return decode_ids(tokenizer, res.tokens, G)


RANDOM_ORDER = RandomOrderParadigm()
