"""M-VAR: next-scale prediction with Mamba between scales (Ren et al. 2024).

Same skeleton as VAR (embeddings, head, VAE), but each block splits the work:

    x += gamma1 * attn(LN(x)(1+scale1)+shift1)     attention only inside each scale (bidirectional)
    x += gamma2 * Mamba2(LN(x)(1+scale2)+shift2)   causal over the whole multi-scale sequence
    x += gamma3 * ffn(LN(x)(1+scale3)+shift3)

so everything a scale learns from earlier scales flows through the Mamba2 state. Decoding
therefore needs no KV cache: attention sees only the current scale, and each block carries
its Mamba2 conv/SSM state from scale to scale (the official code re-runs Mamba over the
whole prefix at every scale; the results are the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..family import Family, Size
from ..layers import mamba2
from ..layers.attention import VARAttention
from ..layers.mamba2 import Mamba2, Mamba2Cache
from ..sample.scales import NEXT_SCALE
from ..tokenizers import KINDS
from .var import FFN, DropPath, NextScaleBase, VARConfig, depth_size, convert_next_scale, ln, next_scale_inputs, scale_bounds


@dataclass
class MVARConfig(VARConfig):
    # Mamba2 of the inter-scale branch (hard-coded in the official block)
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    chunk_size: int = 256

    def __post_init__(self):
        super().__post_init__()
        if self.shared_aln:
            raise ValueError("MVARConfig.shared_aln is not supported (it does not run in the official code either)")


class MVARBlock(nn.Module):
    n_mod = 9

    def __init__(self, cfg: MVARConfig, drop_path: float):
        super().__init__()
        C = cfg.embed_dim
        self.eps, self.C = cfg.norm_eps, C
        self.seg_lens = [p * p for p in cfg.patch_nums]
        self.attn = VARAttention(C, cfg.num_heads, cfg.attn_l2_norm, cfg.attn_drop_rate, cfg.drop_rate)
        self.attn.register_buffer("patch_nums", torch.tensor(self.seg_lens, dtype=torch.int32))  # official buffer
        self.mamba = Mamba2(C, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, headdim=cfg.headdim,
                            chunk_size=cfg.chunk_size)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio), cfg.drop_rate)
        self.drop_path = DropPath(drop_path)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, self.n_mod * C))

    def forward(self, x, cond, cache: Mamba2Cache | None = None, seg_lens: list[int] | None = None):
        """x (B, L, C). Training: all scales, `seg_lens` their lengths. Decoding: one scale, with the cache."""
        g1, g2, g3, s1, s2, s3, b1, b2, b3 = self.ada_lin(cond).view(-1, 1, self.n_mod, self.C).unbind(2)
        h = ln(x, self.eps) * (1 + s1) + b1
        h = self.attn(h) if seg_lens is None else self.attn.forward_segments(h, seg_lens)
        x = x + self.drop_path(h * g1)
        x = x + self.drop_path(self.mamba(ln(x, self.eps) * (1 + s2) + b2, cache) * g2)
        return x + self.drop_path(self.ffn(ln(x, self.eps) * (1 + s3) + b3) * g3)


class MVAR(NextScaleBase):
    def __init__(self, config: MVARConfig):
        super().__init__(config, block_mask="diagonal")
        dpr = [config.drop_path_rate * i / max(1, config.depth - 1) for i in range(config.depth)]  # linear ramp
        self.blocks = nn.ModuleList(MVARBlock(config, dpr[i]) for i in range(config.depth))
        self.init_weights()

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, x_BLCv: torch.Tensor):
        """As VAR.forward: logits (B, L, V) of every scale and the mean cross-entropy."""
        x, cond, _ = self.sequence_input(labels, x_BLCv)
        seg = [p * p for p in self.config.patch_nums]
        for blk in self.blocks:
            x = blk(x, cond, seg_lens=seg)
        logits = self.logits(x, cond)
        return logits, self.loss(logits, tokens)

    def allocate_cache(self, batch: int, device=None, dtype=None) -> list[Mamba2Cache]:
        p = self.head.weight
        return [blk.mamba.allocate_cache(batch, device or p.device, dtype or p.dtype) for blk in self.blocks]

    def decode_scale(self, x_BlC, cond, mod, cache: list[Mamba2Cache], si: int, block_step=None):
        """Tokens of scale si (B, pn^2, C) -> logits (B, pn^2, V); the Mamba2 states carry earlier scales.
        block_step: replaces `block_decode_step` (a compiled version: `MVARFastCall`)."""
        step = block_step or block_decode_step
        for blk, mc in zip(self.blocks, cache):
            x_BlC = step(blk, x_BlC, cond, mc.conv, mc.ssm)
        return self.logits(x_BlC, cond)


def block_decode_step(blk: MVARBlock, x_BlC, cond, conv, ssm):
    """One block on one scale's tokens, its Mamba2 state passed as tensors (so that a compiled version
    serves every block)."""
    return blk(x_BlC, cond, cache=Mamba2Cache(conv, ssm))


# ---------------------------------------------------------------- the fast path (one CUDA graph per call)
class MVARFastCall:
    """What M-VAR's whole-call graph runs (`sample.graphs.GraphedCallSampler`): the Mamba2 scan of each
    scale in the tensor-core formulation in chunks of 64 (`layers/ssd_fast.py`; its in-chunk decays grow
    with the chunk squared, and with chunk 256 Inductor failed to compile it, bench/results/
    h100_run7_fast_checks.json), and the block step compiled for scales of COMPILED_MIN_LEN tokens or more
    (its four largest: one compilation each), eager for the small ones, where compiling gains little.
    compile_blocks=False: nothing compiled (the tensor-core scan eagerly)."""

    def __init__(self, model: "MVAR", compile_blocks: bool = True, compile_mode: str | None = None):
        self.model, self.compile_blocks = model, compile_blocks
        self.block_steps = None
        if compile_blocks:
            compiled = torch.compile(block_decode_step, fullgraph=False, dynamic=False, mode=compile_mode)
            self.block_steps = lambda blk, x, cond, conv, ssm: (
                compiled if x.shape[1] >= mamba2.COMPILED_MIN_LEN else block_decode_step)(blk, x, cond, conv, ssm)

    def setting(self):
        return mamba2.scan_impl(self.model, "compiled" if self.compile_blocks else "fast", chunk=64)


# ---------------------------------------------------------------- the family record
# attn_l2_norm as the official checkpoints use it (README: off for d16/d20)
_SIZES = {f"mvar-d{d}": Size({**depth_size(d), "attn_l2_norm": l2},
                             f"M-VAR-d{d} (256 px)" + (" - the paper says 3.0B" if d == 32 else ""), n)
          for d, l2, n in ((12, True, 198_435_568), (16, False, 464_157_184), (20, False, 900_528_736),
                           (24, True, 1_550_067_136), (30, True, 3_017_065_756), (32, True, 3_658_707_968))}
_SIZES["mvar-tiny"] = Size(dict(depth=2, embed_dim=32, num_heads=2, vocab_size=256, Cvae=8, num_classes=10,
                                patch_nums=(1, 2, 3, 4), d_state=16, headdim=16, chunk_size=16), "tests: 2 blocks, 32 wide")
# ~6.4M parameters, the demo study (docs/study): scales 1,2,3,4,6,8 of msvq-demo
_SIZES["mvar-small"] = Size(dict(depth=6, embed_dim=192, num_heads=3, Cvae=32, patch_nums=(1, 2, 3, 4, 6, 8), d_state=64,
                                 headdim=64, chunk_size=64, drop_rate=0.1, vocab_size=1024, num_classes=9),
                            "demo study: 6 blocks, 192 wide")

FAMILY = Family(
    name="mvar", description="M-VAR: next-scale prediction, attention within scales, Mamba2 across them",
    config=MVARConfig, model=MVAR, sizes=_SIZES, tokenizer="msvq", fit=KINDS["msvq"].fit, sampler=NEXT_SCALE,
    fast=MVARFastCall, edits=frozenset({"inpaint", "outpaint"}), sampling_options=frozenset({"more_smooth"}),
    official_sampling=dict(top_k=900, top_p=0.96),
    train_inputs=next_scale_inputs, needs_quantizer=True,
    convert=lambda weights, official_config=None, **kw: convert_next_scale("mvar", weights, official_config, **kw),
    convert_options=("vae",), convert_help="d16.pth ... with --vae vae_ch160v4096z32.pth (config inferred from the "
    "tensors)", parity=("mvar",))

__all__ = ["MVAR", "MVARConfig", "MVARFastCall", "block_decode_step", "scale_bounds", "FAMILY"]
