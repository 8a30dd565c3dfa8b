"""AiM: autoregressive image generation with Mamba2 (Li et al. 2024).

Next-token prediction over VQ tokens in raster order. The sequence is

    [c, e(t_0) + p_0, e(t_1) + p_1, ..., e(t_{N-2}) + p_{N-2}]      (length N)

where c is the class embedding (first position, no position embedding), e the
token embedding tied to the output head, p learned absolute position embeddings
(the paper shows they remove "mirror artifacts"). Position i predicts t_i.
Each block is  x = x + gate * Mamba2(norm(x) * (1 + scale) + shift)  with
(shift, scale, gate) from adaLN-group conditioning on c; a final adaLN layer
precedes the head. Decoding is recurrent: O(1) state per token (`step`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..family import Family, Size, token_inputs
from ..layers.adaln import AdaLNGroup, modulate
from ..layers.embed import check_labels
from ..layers.mamba2 import Mamba2, Mamba2Cache
from ..layers.norm import RMSNorm
from ..sample.raster import RASTER
from ..tokenizers import KINDS
from .aim_fast import AiMFastDecode


@dataclass
class AiMConfig:
    d_model: int = 1024
    n_layer: int = 48
    vocab_size: int = 16384          # codebook size of the tokenizer
    num_classes: int = 1000          # id num_classes is the null class (CFG)
    num_tokens: int = 256            # tokens per image (16 x 16 for 256 px and VQ-f16)
    # Mamba2 mixer (official defaults)
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    mixer_options: dict = field(default_factory=dict)  # further Mamba2 arguments (D_has_hdim, dt_limit, ...)
    # conditioning: "layer" = a Linear per block (AiM-B); "group" = adaLN-group with adaln_groups sets
    adaln: Literal["layer", "group"] = "group"
    adaln_groups: int = 4
    position_embedding: bool = True  # the paper's ablation switches this off
    class_dropout: float = 0.1       # label -> null with this probability while training (CFG)
    token_dropout: float = 0.0       # dropout on input embeddings
    mixer_dropout: float = 0.0       # dropout on each gated mixer output
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Behaviours of the official code that official weights rely on:
    norm_f: bool = True              # an RMSNorm right before the final adaLN layer's own RMSNorm
    sample_position_shift: int = 0   # official sampling feeds token t with position row t+1 (trained with row t)
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. provenance); not architecture

    def __post_init__(self):
        if self.adaln not in ("layer", "group"):
            raise ValueError(f"AiMConfig.adaln must be 'layer' or 'group', got {self.adaln!r}")
        if self.adaln == "group" and not 1 <= self.adaln_groups <= self.n_layer:
            raise ValueError(f"AiMConfig.adaln_groups must be in 1..n_layer={self.n_layer}, got {self.adaln_groups}")
        if (self.expand * self.d_model) % self.headdim:
            raise ValueError(f"AiMConfig: expand*d_model={self.expand * self.d_model} is not a multiple of headdim={self.headdim}")
        if self.sample_position_shift not in (0, 1):
            raise ValueError("AiMConfig.sample_position_shift must be 0 (consistent) or 1 (official sampling)")
        if int(round(self.num_tokens ** 0.5)) ** 2 != self.num_tokens:
            raise ValueError(f"AiMConfig.num_tokens={self.num_tokens} is not a square grid")

    @property
    def grid(self) -> int:
        return int(round(self.num_tokens ** 0.5))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AiMCache:
    """Everything decoding needs, preallocated once per batch.

    layers: one Mamba2Cache per block (conv + SSM state)
    mods:   (n_layer, B, 3, D) per-block (shift, scale, gate), fixed by the class
    final:  (B, 2, D) final-layer (shift, scale)
    """
    layers: list[Mamba2Cache]
    mods: torch.Tensor
    final: torch.Tensor

    def reset(self) -> None:
        for c in self.layers:
            c.reset()


class AiMBlock(nn.Module):
    def __init__(self, cfg: AiMConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = RMSNorm(d, eps=cfg.norm_eps)
        self.mixer = Mamba2(d, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, headdim=cfg.headdim,
                            ngroups=cfg.ngroups, chunk_size=cfg.chunk_size, **cfg.mixer_options)
        if cfg.adaln == "layer":
            self.ada_lin = nn.Linear(d, 3 * d)                       # own (shift, scale, gate)
        else:
            self.ada_table = nn.Parameter(torch.zeros(1, 3, d))      # added to the shared group's set
        self.dropout = nn.Dropout(cfg.mixer_dropout)

    def modulation(self, c: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, D) rows shift, scale, gate (the official order)."""
        if group is None:
            return self.ada_lin(F.silu(c)).unflatten(-1, (3, -1))
        return self.ada_table + group

    def forward(self, x, c, group=None, cache: Mamba2Cache | None = None):
        """x (B, L, D) float32 residual stream; c (B, D) class embedding; group (B, 3, D) or None.

        The modulation is computed here, inside the block, so that a sharded (FSDP) block
        has its parameters gathered when they are read.
        """
        shift, scale, gate = self.modulation(c, group)[:, None].unbind(2)   # (B, 1, D) each
        h = modulate(self.norm(x), shift, scale)
        return x + self.dropout(gate * self.mixer(h.to(self.mixer.in_proj.weight.dtype), cache)).float()

    def step(self, x, mod, cache: Mamba2Cache, index=None):
        """x (B, D); index: the step number (needed by a paired cache, see `Mamba2.step`)."""
        h, gate = self.mixer_input(x, mod)
        return x + (gate * self.mixer.step(h, cache, index)).float()

    def mixer_input(self, x, mod):
        """The mixer's input and the gate of its output at one decoding step: x (B, D) -> (B, D) x 2."""
        shift, scale, gate = mod.unbind(1)                           # (B, D) each
        return modulate(self.norm(x), shift, scale).to(self.mixer.in_proj.weight.dtype), gate


class AiM(nn.Module):
    def __init__(self, config: AiMConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        # 1. embeddings: tokens (tied with the head), classes (+ null), positions (+1 row, official shape)
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d)
        self.pos_emb = nn.Embedding(cfg.num_tokens + 1, d) if cfg.position_embedding else None
        self.drop = nn.Dropout(cfg.token_dropout)
        # 2. conditioning shared by the blocks (adaLN-group)
        self.ada_group = AdaLNGroup(d, cfg.adaln_groups) if cfg.adaln == "group" else None
        # 3. Mamba2 blocks
        self.blocks = nn.ModuleList(AiMBlock(cfg) for _ in range(cfg.n_layer))
        # 4. final adaLN layer and the tied head
        self.norm_f = RMSNorm(d, eps=cfg.norm_eps) if cfg.norm_f else None
        self.final_norm = RMSNorm(d, eps=cfg.norm_eps)
        self.final_ada_lin = nn.Linear(d, 2 * d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.init_weights()
        self.head.weight = self.tok_emb.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.config
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=cfg.init_std)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            # GPT-2 scheme: shrink each residual branch's output projection by 1/sqrt(n_layer)
            nn.init.kaiming_uniform_(blk.mixer.out_proj.weight, a=5 ** 0.5)
            blk.mixer.out_proj.weight.div_(cfg.n_layer ** 0.5)
            if cfg.adaln == "layer":
                nn.init.zeros_(blk.ada_lin.weight)                   # adaLN-Zero: blocks start as identity
            else:
                blk.ada_table.normal_(std=cfg.d_model ** -0.5)       # per-layer offsets (PixArt's table)
        if self.ada_group is not None:
            nn.init.zeros_(self.ada_group.proj.weight)
        nn.init.zeros_(self.final_ada_lin.weight)                    # final modulation starts as identity

    # ---------------------------------------------------------------- conditioning
    def condition(self, labels: torch.Tensor):
        """labels (B,) -> c (B, D), per-block mods (n_layer, B, 3, D), final (B, 2, D)."""
        c = self.class_emb(labels)
        group = self.ada_group(c) if self.ada_group is not None else None   # (B, G, 3, D)
        mods = torch.stack([blk.modulation(c, None if group is None else group[:, i % group.shape[1]])
                            for i, blk in enumerate(self.blocks)])
        final = self.final_ada_lin(F.silu(c)).unflatten(-1, (2, -1))
        return c, mods, final

    def head_logits(self, x, final):
        """x (B, ..., D) float32 residual stream -> logits (B, ..., V)."""
        if self.norm_f is not None:
            x = self.norm_f(x)
        shift, scale = final.unbind(1)                               # (B, D) each
        if x.dim() == 3:
            shift, scale = shift[:, None], scale[:, None]
        x = modulate(self.final_norm(x), shift, scale)
        return self.head(x.to(self.head.weight.dtype))

    def _positions(self, start: int, length: int, device) -> torch.Tensor | None:
        if self.pos_emb is None:
            return None
        return self.pos_emb(torch.arange(start, start + length, device=device))

    def _embed_tokens(self, tokens, pos_start: int):
        h = self.tok_emb(tokens)                                     # (B, L, D)
        p = self._positions(pos_start, tokens.shape[1], tokens.device)
        return h if p is None else h + p

    # ---------------------------------------------------------------- training
    def forward(self, codes: torch.Tensor, labels: torch.Tensor):
        """Teacher forcing. codes (B, N) int64, labels (B,) (null class allowed).

        Returns logits (B, N, V), where logits[:, i] predicts codes[:, i], and the
        mean cross-entropy. Label dropout for CFG is the caller's (`drop_labels`).
        """
        B, N = codes.shape
        if N != self.config.num_tokens:
            raise ValueError(f"AiM expects {self.config.num_tokens} tokens per image, got {N}")
        c = self.class_emb(labels)                                   # (B, D)
        group = self.ada_group(c) if self.ada_group is not None else None   # (B, G, 3, D)
        x = torch.cat([c[:, None], self._embed_tokens(codes[:, :-1], 0)], dim=1)  # (B, N, D)
        x = self.drop(x).float()
        for i, blk in enumerate(self.blocks):
            x = blk(x, c, None if group is None else group[:, i % group.shape[1]])
        logits = self.head_logits(x, self.final_ada_lin(F.silu(c)).unflatten(-1, (2, -1)))  # (B, N, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())
        return logits, loss

    # ---------------------------------------------------------------- decoding
    def allocate_cache(self, batch: int, device=None, dtype=None, paired_conv: bool = False,
                       ssm_form: str = "auto") -> AiMCache:
        """paired_conv: decode every mixer through the fused Triton kernel (see `Mamba2.step`). ssm_form: how
        the mixers keep their SSM (`Mamba2.allocate_cache`; "auto": from the token history on a CPU)."""
        p = self.tok_emb.weight
        device, dtype = device or p.device, dtype or p.dtype
        d, L, N = self.config.d_model, self.config.n_layer, self.config.num_tokens   # N fed: class + N - 1
        return AiMCache(layers=[blk.mixer.allocate_cache(batch, device, dtype, paired_conv, max_len=N, ssm_form=ssm_form)
                                for blk in self.blocks],
                        mods=torch.zeros(L, batch, 3, d, device=device, dtype=dtype),
                        final=torch.zeros(batch, 2, d, device=device, dtype=dtype))

    def prefill(self, labels: torch.Tensor, cache: AiMCache, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Start decoding: class token (+ optional known leading tokens). Returns logits (B, V) of the next token."""
        check_labels(labels, self.config.num_classes)
        cache.reset()
        c, mods, final = self.condition(labels)
        cache.mods.copy_(mods)
        cache.final.copy_(final)
        x = c[:, None]
        if prefix is not None and prefix.shape[1] > 0:
            x = torch.cat([x, self._embed_tokens(prefix, self.config.sample_position_shift)], dim=1)
        x = x.float()
        group = self.ada_group(c) if self.ada_group is not None else None
        for i, (blk, lc) in enumerate(zip(self.blocks, cache.layers)):
            x = blk(x, c, None if group is None else group[:, i % group.shape[1]], lc)
        return self.head_logits(x[:, -1], cache.final)

    def embed_step(self, tokens: torch.Tensor, index) -> torch.Tensor:
        """Input of decoding step `index`: tokens (B,) -> (B, D) float32."""
        x = self.tok_emb(tokens)
        if self.pos_emb is not None:
            row = index + self.config.sample_position_shift
            # a device index is looked up, never indexed with (that would sync with the host)
            x = x + (self.pos_emb(row.reshape(1)) if torch.is_tensor(row) else self.pos_emb.weight[row])
        return x.float()

    def step(self, tokens: torch.Tensor, cache: AiMCache, index) -> torch.Tensor:
        """Feed image token number `index` (int or 0-d tensor) and return logits (B, V) for token index + 1.
        (`aim_fast.AiMFastDecode` runs the same step with its blocks compiled and fused.)"""
        x = self.embed_step(tokens, index)
        for blk, mod, lc in zip(self.blocks, cache.mods, cache.layers):
            x = blk.step(x, mod, lc, index)
        return self.head_logits(x, cache.final)


# ---------------------------------------------------------------- the family record
def convert(weights, official_config=None, tokenizer=None, **options):
    """Official AiM (the HF directory of hp-l33/aim-*, a Trainer file, or a state dict + its MambaConfig)
    -> (AiM, its VQ tokenizer when the release holds one, else `tokenizer`)."""
    from ..convert import load_official_aim
    model, own = load_official_aim(weights, official_config, **options)
    return model, own if own is not None else tokenizer


# Paper Table 1; official counts from instantiating hp-l33/AiM.
FAMILY = Family(
    name="aim", description="AiM: raster next-token prediction with Mamba2", config=AiMConfig, model=AiM,
    sizes={
        "aim-b": Size(dict(d_model=768, n_layer=24, adaln="layer"), "AiM-B: 24 layers, 768 wide, per-layer adaLN",
                      147_622_080),
        "aim-l": Size(dict(d_model=1024, n_layer=48, adaln="group", adaln_groups=4),
                      "AiM-L: 48 layers, 1024 wide, adaLN-group (4)", 349_760_000),
        "aim-xl": Size(dict(d_model=1536, n_layer=48, adaln="group", adaln_groups=4),
                       "AiM-XL: 48 layers, 1536 wide, adaLN-group (4)", 763_291_392),
        "aim-1b": Size(dict(d_model=2048, n_layer=48, adaln="group", adaln_groups=4),
                       "AiM-1B: 48 layers, 2048 wide, adaLN-group (4)", 1_335_944_192),
        # small sizes for tests and the CPU demo (own design, no official counterpart)
        "aim-tiny": Size(dict(d_model=64, n_layer=4, vocab_size=256, num_classes=10, num_tokens=16, d_state=16,
                              headdim=16, chunk_size=16, adaln="group", adaln_groups=2),
                         "tests/CPU demo: 4 layers, 64 wide"),
        "aim-small": Size(dict(d_model=256, n_layer=12, vocab_size=1024, num_classes=9, num_tokens=64, d_state=64,
                               headdim=32, chunk_size=64, adaln="group", adaln_groups=4, token_dropout=0.1,
                               mixer_dropout=0.1), "demo scale: 12 layers, 256 wide"),
    },
    tokenizer="vq", fit=KINDS["vq"].fit, sampler=RASTER, fast=AiMFastDecode,
    edits=frozenset({"inpaint", "outpaint"}), sampling_options=frozenset({"cfg_interval"}),
    train_inputs=token_inputs, convert=convert,
    convert_help="the HF directory of hp-l33/aim-* (config.json + model.safetensors; its tokenizer is converted "
                 "too) or a state dict + --config", parity=("aim",))
