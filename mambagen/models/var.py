"""VAR: next-scale prediction (Tian et al. 2024), and the skeleton M-VAR shares.

An image is a pyramid of token maps r_1 ... r_S (sizes patch_nums, e.g. 1, 2, 3, 4, 5, 6, 8,
10, 13, 16) from a multi-scale residual VQVAE. The sequence holds every scale in order,
L = sum(pn^2). Scale s is predicted all at once from the class and the scales before it:

    input  = [class_emb + pos_start, word_embed(VAE teacher-forcing maps of scales 1..S-1)]
             + lvl_embed(scale id) + pos_1LC
    blocks: x += gamma1 * attn(LN(x)(1+scale1)+shift1);  x += gamma2 * ffn(LN(x)(1+scale2)+shift2)
    head:   LN(x)(1+scale)+shift -> Linear -> logits over the VAE codebook

VAR's attention is block-causal (a token sees its own and earlier scales); decoding keeps
earlier scales in a static KV cache. `NextScaleBase` holds what VAR and M-VAR share.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..family import Family, Size
from ..layers.attention import KVCache, VARAttention
from ..sample.scales import NEXT_SCALE
from ..tokenizers import KINDS


@dataclass
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    vocab_size: int = 4096            # VAE codebook size
    Cvae: int = 32                    # VAE code dimension (input of word_embed)
    num_classes: int = 1000           # id num_classes is the null class (CFG)
    patch_nums: tuple = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    shared_aln: bool = False          # VAR-d36: one shared adaLN projection + per-block tables
    class_dropout: float = 0.1
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{type(self).__name__}: embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if not self.patch_nums or any(p < 1 for p in self.patch_nums) or list(self.patch_nums) != sorted(self.patch_nums):
            raise ValueError(f"{type(self).__name__}.patch_nums must be increasing positive sizes, got {self.patch_nums}")

    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def grid(self) -> int:
        return self.patch_nums[-1]

    def to_dict(self) -> dict:
        return asdict(self)


def scale_ids(patch_nums) -> torch.Tensor:
    """(L,) the scale index of every token."""
    return torch.cat([torch.full((p * p,), i, dtype=torch.long) for i, p in enumerate(patch_nums)])


def scale_bounds(patch_nums) -> list[tuple[int, int]]:
    """[(begin, end)] of each scale in the sequence."""
    out, s = [], 0
    for p in patch_nums:
        out.append((s, s + p * p))
        s += p * p
    return out


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def ln(x, eps):
    return F.layer_norm(x, x.shape[-1:], eps=eps)   # LayerNorm without affine parameters


class AdaLNBeforeHead(nn.Module):
    """LN(x)(1 + scale) + shift with (scale, shift) from the class (the official order: scale first)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x_BLC, cond_BD):
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, x_BLC.shape[-1]).unbind(2)
        return ln(x_BLC, self.eps) * (1 + scale) + shift


class VARBlock(nn.Module):
    """x += gamma1 * attn(LN(x)(1+scale1)+shift1);  x += gamma2 * ffn(LN(x)(1+scale2)+shift2)."""
    n_mod = 6

    def __init__(self, cfg: VARConfig, drop_path: float):
        super().__init__()
        C = cfg.embed_dim
        self.eps, self.C = cfg.norm_eps, C
        self.attn = VARAttention(C, cfg.num_heads, cfg.attn_l2_norm, cfg.attn_drop_rate, cfg.drop_rate)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio), cfg.drop_rate)
        self.drop_path = DropPath(drop_path)
        if cfg.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, self.n_mod, C) / C ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, self.n_mod * C))

    def modulation(self, cond):
        """(B, 1, n_mod, C): from the class embedding, or the shared projection plus this block's table."""
        if hasattr(self, "ada_lin"):
            return self.ada_lin(cond).view(-1, 1, self.n_mod, self.C)
        return self.ada_gss + cond

    def forward(self, x, cond, mask=None, cache: KVCache | None = None, start: int = 0):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(cond).unbind(2)   # (B, 1, C) each
        h = ln(x, self.eps) * (1 + scale1) + shift1
        h = self.attn(h, mask) if cache is None else self.attn.forward_cached(h, cache, start)
        x = x + self.drop_path(h * gamma1)
        return x + self.drop_path(self.ffn(ln(x, self.eps) * (1 + scale2) + shift2) * gamma2)


class NextScaleBase(nn.Module):
    """Embeddings, conditioning and head shared by VAR and M-VAR (official key names)."""

    def __init__(self, cfg: VARConfig, block_mask: str):
        super().__init__()
        self.config = cfg
        C, L, first = cfg.embed_dim, cfg.num_tokens, cfg.patch_nums[0] ** 2
        self.first_l = first
        # 1. class embedding (+ null class), start token, positions, levels
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.zeros(1, first, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, L, C))
        self.lvl_embed = nn.Embedding(len(cfg.patch_nums), C)
        # 2. input projection of the VAE's code vectors
        self.word_embed = nn.Linear(cfg.Cvae, C)
        # 3. official buffers: scale id per token and the attention mask between scales
        d = scale_ids(cfg.patch_nums)
        self.register_buffer("lvl_1L", d[None].clone())
        allowed = d[:, None] >= d[None] if block_mask == "causal" else d[:, None] == d[None]
        self.register_buffer("attn_bias_for_masking",
                             torch.zeros(L, L).masked_fill(~allowed, float("-inf"))[None, None])
        # 4. shared adaLN projection (VAR-d36) and the head
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, VARBlock.n_mod * C)) if cfg.shared_aln else None
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)

    @torch.no_grad()
    def init_weights(self, init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02) -> None:
        """VAR's init: std sqrt(1/(3C)); small gammas so blocks start near identity; a small head."""
        C, std = self.config.embed_dim, math.sqrt(1 / self.config.embed_dim / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        depth = len(self.blocks)
        for blk in self.blocks:
            blk.attn.proj.weight.div_(math.sqrt(2 * depth))
            blk.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if hasattr(blk, "ada_lin"):
                n_gamma = blk.n_mod // 3
                blk.ada_lin[-1].weight[n_gamma * C:].mul_(init_adaln)
                blk.ada_lin[-1].weight[:n_gamma * C].mul_(init_adaln_gamma)
        for blk in self.blocks:
            if hasattr(blk, "mamba"):
                blk.mamba.reset_ssm_parameters()

    # ---------------------------------------------------------------- pieces used by training and decoding
    def condition(self, labels):
        """labels (B,) -> (class embedding (B, C), what the blocks are modulated with)."""
        cond = self.class_emb(labels)
        return cond, (self.shared_ada_lin(cond).view(-1, 1, VARBlock.n_mod, cond.shape[-1])
                      if self.shared_ada_lin is not None else cond)

    def level_pos(self, begin: int, end: int):
        """(1, end - begin, C) level + position embedding of tokens [begin, end)."""
        return self.lvl_embed(self.lvl_1L[:, begin:end]) + self.pos_1LC[:, begin:end]

    def first_input(self, cond):
        """(B, first_l, C) the start tokens: class embedding + pos_start + level/position."""
        B = cond.shape[0]
        return cond[:, None].expand(B, self.first_l, -1) + self.pos_start + self.level_pos(0, self.first_l)

    def next_input(self, next_map_BCvhw, si: int):
        """The VAE's next-scale map (B, Cvae, pn, pn) -> (B, pn^2, C) input tokens of scale si."""
        b, e = scale_bounds(self.config.patch_nums)[si]
        return self.word_embed(next_map_BCvhw.flatten(2).transpose(1, 2)) + self.level_pos(b, e)

    def logits(self, x_BLC, cond):
        """Logits in at least float32 (the head itself runs in the weights' dtype, or autocast's)."""
        w = self.head.weight.dtype
        out = self.head(self.head_nm(x_BLC.to(w), cond.to(w)))
        return out.to(torch.promote_types(out.dtype, torch.float32))

    def sequence_input(self, labels, x_BLCv):
        """Teacher forcing: (B, L, C) from labels and the VAE's maps of scales 2..S (B, L - first_l, Cvae)."""
        cond, mod = self.condition(labels)
        x = torch.cat([cond[:, None].expand(-1, self.first_l, -1) + self.pos_start,
                       self.word_embed(x_BLCv.to(self.word_embed.weight.dtype))], dim=1)
        return x + self.level_pos(0, x.shape[1]), cond, mod

    def loss(self, logits_BLV, tokens_BL):
        return F.cross_entropy(logits_BLV.float().flatten(0, 1), tokens_BL.flatten())


class VAR(NextScaleBase):
    def __init__(self, config: VARConfig):
        super().__init__(config, block_mask="causal")
        dpr = [config.drop_path_rate * i / max(1, config.depth - 1) for i in range(config.depth)]  # linear ramp
        self.blocks = nn.ModuleList(VARBlock(config, dpr[i]) for i in range(config.depth))
        self.init_weights()

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, x_BLCv: torch.Tensor):
        """tokens (B, L) ground-truth ids of all scales (the targets), labels (B,), x_BLCv (B, L - first_l, Cvae)
        the VAE's teacher-forcing input. Returns logits (B, L, V) and the mean cross-entropy."""
        x, cond, mod = self.sequence_input(labels, x_BLCv)
        mask = self.attn_bias_for_masking[:, :, :x.shape[1], :x.shape[1]].to(x.dtype)
        for blk in self.blocks:
            x = blk(x, mod, mask)
        logits = self.logits(x, cond)
        return logits, self.loss(logits, tokens)

    # ---------------------------------------------------------------- decoding, one scale at a time
    def allocate_cache(self, batch: int, device=None, dtype=None) -> list[KVCache]:
        p = self.head.weight
        cfg = self.config
        return [KVCache.allocate(batch, cfg.num_heads, cfg.num_tokens, cfg.embed_dim // cfg.num_heads,
                                 device or p.device, dtype or p.dtype) for _ in self.blocks]

    def decode_scale(self, x_BlC, cond, mod, cache: list[KVCache], si: int):
        """Tokens of scale si (B, pn^2, C) -> logits (B, pn^2, V); earlier scales come from the cache."""
        start = scale_bounds(self.config.patch_nums)[si][0]
        for blk, kv in zip(self.blocks, cache):
            x_BlC = blk(x_BlC, mod, cache=kv, start=start)
        return self.logits(x_BlC, cond)


# ---------------------------------------------------------------- the family record (and what M-VAR shares)
def next_scale_inputs(model, tokens, labels, quantizer, rng=None):
    """Teacher forcing: the tokenizer's quantizer turns the ground-truth ids of every scale into the
    next scales' input maps (B, L - first, Cvae)."""
    with torch.no_grad():
        x_BLCv = quantizer.idx_to_var_input(list(tokens.split([p * p for p in quantizer.patch_nums], dim=1)))
    return tokens, labels, x_BLCv


def convert_next_scale(family: str, weights, official_config=None, tokenizer=None, vocab_size=None, Cvae=None):
    """Official VAR / M-VAR weights + the VQVAE they were trained with (its vocabulary and code width
    shape the model) -> (model, VQVAE)."""
    from ..convert.var import load_official_var
    if tokenizer is None and vocab_size is None:
        raise ValueError(f"{family} needs its VQVAE: pass --vae vae_ch160v4096z32.pth (the VQVAE it was trained with)")
    if tokenizer is not None:
        vocab_size, Cvae = tokenizer.codebook_size, tokenizer.config.z_channels
    return load_official_var(family, weights, official_config, vocab_size=vocab_size, Cvae=Cvae or 32), tokenizer


def depth_size(d: int) -> dict:
    """The official builders tie width = 64 * depth, heads = depth, drop-path 0.1 * depth / 24."""
    return dict(depth=d, embed_dim=64 * d, num_heads=d, drop_path_rate=0.1 * d / 24)


_VAR_SIZES = {f"var-d{d}": Size(depth_size(d), f"VAR-d{d} (256 px)", n)
              for d, n in ((16, 310_283_520), (20, 600_917_136), (24, 1_033_399_360), (30, 2_010_020_356))}
_VAR_SIZES["var-d36"] = Size({**depth_size(36), "shared_aln": True, "patch_nums": (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)},
                             "VAR-d36 (512 px, shared adaLN)", 2_353_893_904)
_VAR_SIZES["var-tiny"] = Size(dict(depth=2, embed_dim=32, num_heads=2, vocab_size=256, Cvae=8, num_classes=10,
                                   patch_nums=(1, 2, 3, 4)), "tests: 2 blocks, 32 wide")

FAMILY = Family(
    name="var", description="VAR: next-scale prediction, the block-causal transformer baseline", config=VARConfig,
    model=VAR, sizes=_VAR_SIZES, tokenizer="msvq", fit=KINDS["msvq"].fit, sampler=NEXT_SCALE, fast=None,
    edits=frozenset({"inpaint", "outpaint"}), sampling_options=frozenset({"more_smooth"}),
    official_sampling=dict(top_k=900, top_p=0.96),
    train_inputs=next_scale_inputs, needs_quantizer=True,
    convert=lambda weights, official_config=None, **kw: convert_next_scale("var", weights, official_config, **kw),
    convert_options=("vae",), convert_help="var_d16.pth ... with --vae vae_ch160v4096z32.pth", parity=("var",))
