"""Next-scale decoding for VAR and M-VAR: one scale at a time, coarse to fine.

A model supports `condition(labels)`, `first_input(cond)`, `next_input(next_map, si)`,
`allocate_cache(batch)` and `decode_scale(x, cond, mod, cache, si) -> logits`. The
multi-scale quantizer turns each scale's ids into the next scale's input
(`next_ar_input`), accumulating f_hat, which the VAE decodes at the end.

Guidance follows the official samplers: at scale s of S the logits are
(1 + t) * cond - t * uncond with t = cfg * s / (S - 1): none at the first scale, full at the last.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SamplingConfig
from .logits import cfg_combine, draw_tokens, uniforms
from .raster import token_cells


@dataclass
class ScaleSample:
    indices: list[torch.Tensor]          # per scale (B, pn^2) int64
    f_hat: torch.Tensor                  # (B, Cvae, pn_last, pn_last) accumulated VAE features
    logits: list[torch.Tensor] | None    # per scale (B, pn^2, V) guided logits, if asked for


def gumbel_soft_codes(logits, ratio: float, embedding: torch.Tensor, rng=None, draw=0):
    """VAR's "more smooth" visualisation: a Gumbel-softmax mixture of code vectors instead of one code.
    logits (B, l, V), embedding (V, Cvae) -> (B, l, Cvae)."""
    tau = max(0.27 * (1 - ratio * 0.95), 0.005)
    u = uniforms(rng, draw, tuple(logits.shape), logits.device).clamp_min(1e-20)
    gumbels = -torch.log(-torch.log(u).clamp_min(1e-20))
    return ((logits * (1 + ratio) + gumbels) / tau).softmax(-1) @ embedding


def scale_masks(mask_HW: torch.Tensor, patch_nums) -> list[torch.Tensor]:
    """Region to regenerate (H, W) bool -> per scale (pn^2,) bool: a token is regenerated when any
    part of its area lies inside the region."""
    m = mask_HW.float()[None, None]
    return [(torch.nn.functional.adaptive_max_pool2d(m, (p, p)) > 0).flatten() for p in patch_nums]


@torch.no_grad()
def generate_scales(model, quantizer, labels: torch.Tensor, sampling: SamplingConfig, rng=None, *,
                    known: list[torch.Tensor] | None = None, regenerate: list[torch.Tensor] | None = None,
                    return_logits: bool = False, block_step=None) -> ScaleSample:
    """Sample every scale for `labels` (B,). Scale si is draw si of `rng` (its soft codes: draw S + si).

    Editing: `known` (per scale (B, pn^2) ids of a real image) are teacher-forced wherever
    `regenerate` (per scale (pn^2,) or (B, pn^2) bool) is False, at every scale.
    block_step: M-VAR's block step to use instead of its own (a compiled one, `models.mvar`).
    """
    mcfg = model.config
    pns, S = mcfg.patch_nums, len(mcfg.patch_nums)
    B = labels.shape[0]
    cfg = sampling.cfg_scale - 1                                       # the official `cfg` (t at the last scale)
    guided = cfg != 0
    all_labels = torch.cat([labels, torch.full_like(labels, mcfg.num_classes)]) if guided else labels
    cond, mod = model.condition(all_labels)
    cache = model.allocate_cache(all_labels.shape[0])
    emb = quantizer.embedding.weight                                   # (V, Cvae)
    f_hat = emb.new_zeros(B, emb.shape[1], pns[-1], pns[-1])
    x = model.first_input(cond)
    indices, all_logits = [], []
    for si, pn in enumerate(pns):
        ratio = si / max(1, S - 1)
        logits = (model.decode_scale(x, cond, mod, cache, si) if block_step is None       # (B or 2B, pn^2, V)
                  else model.decode_scale(x, cond, mod, cache, si, block_step=block_step))
        if guided:
            logits = cfg_combine(*logits.chunk(2), 1 + cfg * ratio)
        idx = draw_tokens(logits, sampling, rng, si)                   # (B, pn^2)
        if known is not None:
            keep = ~regenerate[si].to(idx.device)
            idx = torch.where(keep, known[si].to(idx.device), idx)
        indices.append(idx)
        if return_logits:
            all_logits.append(logits)
        smooth = sampling.more_smooth and known is None
        h = gumbel_soft_codes(logits, ratio, emb, rng, S + si) if smooth else emb[idx]
        h_BChw = h.transpose(1, 2).reshape(B, -1, pn, pn)
        f_hat, next_map = quantizer.next_ar_input(si, f_hat, h_BChw)
        if si + 1 < S:
            x = model.next_input(next_map, si + 1)
            x = torch.cat([x, x]) if guided else x
    return ScaleSample(indices, f_hat, all_logits if return_logits else None)


class NextScaleParadigm:
    """Next-scale models (VAR, M-VAR) for their family records: the reference call, the whole call as
    one CUDA graph with the family's compiled steps, images, and editing any region (known tokens
    teacher-forced at every scale)."""
    name = "next-scale"

    regenerated = staticmethod(token_cells)   # an edit redraws every token cell its region touches

    @staticmethod
    def _call(quantizer, sampling):
        return lambda model, labels, rng, block_step: generate_scales(model, quantizer, labels, sampling, rng,
                                                                      block_step=block_step)

    def reference(self, model, tokenizer, labels, sampling, rng, progress=False) -> ScaleSample:
        return generate_scales(model, tokenizer.quantize, labels, sampling, rng)

    def fast(self, model, tokenizer, batch, sampling, fast, *, rows=False, compile=False, graph=True):
        from .graphs import GraphedCallSampler
        from .graphs import NoFastSetting
        steps = NoFastSetting() if fast is None else fast(model, compile_blocks=compile)
        return GraphedCallSampler(model, batch, self._call(tokenizer.quantize, sampling), steps, rows=rows)

    def images(self, model, tokenizer, result: ScaleSample):
        return tokenizer.fhat_to_img(result.f_hat).clamp(-1, 1), self.tokens(result)

    def tokens(self, result: ScaleSample) -> torch.Tensor:
        return torch.cat(result.indices, dim=1)

    def edit(self, model, tokenizer, images, region, labels, sampling, rng, fast=None, compile=False):
        """region (H, W) bool, True = regenerate."""
        from .graphs import NoFastSetting
        known = tokenizer.encode(images)
        regen = scale_masks(region, model.config.patch_nums)
        steps = NoFastSetting() if fast is None else fast(model, compile_blocks=compile)
        with steps.setting():
            res = generate_scales(model, tokenizer.quantize, labels, sampling, rng, known=known, regenerate=regen,
                                  block_step=steps.block_steps)
        return self.images(model, tokenizer, res)[0]


NEXT_SCALE = NextScaleParadigm()
