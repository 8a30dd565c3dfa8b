"""AiM's fast decode path: every block's step in four kernels, the whole start capturable.

`AiMFastDecode` is what the AiM record gives the raster step sampler (`sample.fast`): with CUDA
weights and Triton importable, each block runs as four kernels (see `_aim_block_step`): the previous
block's residual update with this block's norm and adaLN (`kernels/residual_norm.py`), in_proj,
conv + SSM update + skip + gate (`kernels/mamba2_step.py`), and a split-K out_proj with the gated
norm folded in (`kernels/skinny_linear.py`). Its start - conditioning and the class token's step
from an empty state, which is what prefill computes - is capturable too. Otherwise (CPU, or
fused=False) the same deferred-residual step runs in PyTorch with the mixer's own step, compiled
with compile_blocks. Every piece has a PyTorch reference, and the tests compare them (on CPU in
Triton's interpreter): `aim_step` equals `AiM.step`, `aim_start` equals `AiM.prefill`.
"""
from __future__ import annotations

import torch

from ..layers import kernels
from ..layers.mamba2 import Mamba2Cache


OUT_PROJ_SPLIT = 8   # split-K of the fused path's out_proj (bench/results/h100_decode_parts_tuning.json)


def _out_proj_block_k(m, rows: int) -> int | None:
    """The K tile of the fused path's split-K out_proj for this mixer, or None where the fused path
    cannot run it (then the mixer's own norm and out_proj run)."""
    block_k = min(64, m.d_inner // OUT_PROJ_SPLIT)
    ok = (kernels.skinny_linear is not None and kernels.residual_norm_modulate is not None
          and m.norm is not None and m.out_proj.bias is None and rows <= 128
          and block_k >= 16 and block_k & (block_k - 1) == 0 and m.d_inner % (OUT_PROJ_SPLIT * block_k) == 0
          and OUT_PROJ_SPLIT % m.ngroups == 0)
    return block_k if ok else None


def _aim_block_step(blk, x, pending, mod, conv, ssm, conv_pair, index):
    """AiM block i's decode step with block i-1's residual update (`pending`) moved in, so that it
    runs in the same kernel as this block's norm. Returns (x, pending).

    With a paired cache, three Triton kernels and in_proj: [block i-1's update + norm + adaLN] ->
    in_proj -> [conv, SSM, skip, gate] -> one split-K matmul of (g * norm weight) by out_proj; the
    gated RMSNorm's 1 / rms, a scalar per row (and group), is applied to that matmul's output by the
    next block. Otherwise the same in PyTorch with the mixer's own step (compiled by the caller).
    """
    m, cache = blk.mixer, Mamba2Cache(conv, ssm, conv_pair)
    block_k = _out_proj_block_k(m, x.shape[0])
    if conv_pair is not None and block_k is not None:
        g, parts, gate = pending if pending is not None else (None, None, None)
        x, h = kernels.residual_norm_modulate(x, mod, blk.norm.weight, blk.norm.eps, m.in_proj.weight.dtype,
                                              g, parts, gate, m.norm.eps, m.ngroups)
        g = m.fused_core(m.in_proj(h), cache, index)                           # (B, d_inner) = y * SiLU(z)
        parts = kernels.skinny_linear(g, m.out_proj.weight, scale=m.norm.weight, split=OUT_PROJ_SPLIT,
                                      block_n=32, block_k=block_k, num_stages=4)   # (split, B, d_model) fp32
        return x, (g, parts, mod[:, 2])
    if pending is not None:
        x = x + _residual_update(m, *pending)
    h, gate = blk.mixer_input(x, mod)
    return x, (None, m.step(h, cache, index), gate)


def _residual_update(m, g, out, gate):
    """gate * out_proj(gated norm output) as a float32 (B, d_model). `out` is out_proj's output, or,
    when g is given, the split-K partials of out_proj(g * norm weight) (see `_aim_block_step`)."""
    if g is None:
        return (gate * out).float()
    G = m.ngroups
    rstd = torch.rsqrt(g.float().unflatten(-1, (G, -1)).pow(2).mean(-1) + m.norm.eps)   # (B, G)
    per_group = out.unflatten(0, (G, -1)).sum(1)                       # (G, B, d_model)
    return gate.float() * (per_group * rstd.T[:, :, None]).sum(0)


def _aim_blocks(model, x, cache, index, block_step):
    pending = None
    for blk, mod, lc in zip(model.blocks, cache.mods, cache.layers):
        x, pending = block_step(blk, x, pending, mod, lc.conv, lc.ssm, lc.conv_pair, index)
    return model.head_logits(x + _residual_update(model.blocks[-1].mixer, *pending), cache.final)


def aim_step(model, tokens, cache, index, block_step=_aim_block_step):
    """`AiM.step` with the blocks' residual updates deferred (see `_aim_block_step`): same logits."""
    return _aim_blocks(model, model.embed_step(tokens, index), cache, index, block_step)


def aim_start(model, labels, cache, parity_index, block_step=_aim_block_step):
    """`AiM.prefill(labels, cache)` (no prefix) as a decoding step of the class token from an empty
    state - the same computation, and capturable in a CUDA graph (no host syncs: labels are checked
    by the caller). parity_index: an odd 0-d tensor, so that token 0's step finds the conv history
    in the buffer it reads (see `Mamba2Cache.conv_pair`)."""
    cache.reset()
    c, mods, final = model.condition(labels)
    cache.mods.copy_(mods)
    cache.final.copy_(final)
    return _aim_blocks(model, c.float(), cache, parity_index, block_step)


def fused_decode_available(model) -> bool:
    """Whether AiM decoding can use the fused Mamba2 kernel here (CUDA weights, Triton importable)."""
    return kernels.mamba2_step_fused is not None and next(model.parameters()).is_cuda


class AiMFastDecode:
    """decode = AiMFastDecode(model, rows); logits = decode.start(labels); logits = decode.step(tokens, index).

    fused: the fused Mamba2 decode kernels (None: wherever they are available; they need a paired
    conv cache). compile_blocks: compile the block step (one function for every block).
    compile_mode: torch.compile's mode ("max-autotune-no-cudagraphs" also tunes the matmuls)."""
    capture_start = True

    def __init__(self, model, rows: int, *, compile_blocks: bool = True, fused: bool | None = None,
                 compile_mode: str | None = None):
        self.model = model
        self.fused = fused_decode_available(model) if fused is None else fused
        self.cache = model.allocate_cache(rows, paired_conv=self.fused, ssm_form="state")   # its steps read the state
        self.block_step = (torch.compile(_aim_block_step, fullgraph=False, dynamic=False, mode=compile_mode)
                           if compile_blocks else _aim_block_step)
        p = next(model.parameters())
        self.odd = torch.ones((), dtype=torch.long, device=p.device)   # the start's conv-parity index

    def start(self, labels: torch.Tensor) -> torch.Tensor:
        return aim_start(self.model, labels, self.cache, self.odd, self.block_step)

    def step(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return aim_step(self.model, tokens, self.cache, index, self.block_step)
