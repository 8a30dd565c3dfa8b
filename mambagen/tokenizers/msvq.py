"""VAR's multi-scale residual VQ tokenizer (VQVAE `vae_ch160v4096z32`, also used by M-VAR).

An image in [-1, 1] is encoded to a latent f (B, Cvae, n, n), n = image size / downsample. The
quantizer turns f into one token map per scale, pn_0 x pn_0 ... pn_last x pn_last (pn_last = n),
residual style: every scale quantises what the previous scales left over, and its code vectors,
upsampled to n x n and refined by a small conv Φ, are added to the running reconstruction f_hat.
The decoder maps f_hat back to an image. Module and parameter names follow the official
`models/vqvae.py`, `models/quant.py`, `models/basic_vae.py` so released weights load without
renaming (see `mambagen.convert.var_vqvae`).

Public API (images (B, 3, H, W) in [-1, 1]; ids per scale (B, pn*pn) int64 in raster order; "flat"
ids (B, L) are all scales concatenated in scale order, L = sum(pn^2)):

    model = create_msvq("msvq-f16")
    idx_list = model.encode(images)             # [(B, 1), (B, 4), ..., (B, 256)]
    ids_BL = model.encode_flat(images)          # (B, 680)
    images = model.decode(idx_list or ids_BL)   # (B, 3, H, W), clamped to [-1, 1]
    recon, losses = model(images)               # stage-1 training (recon not clamped)

The quantizer's phases (`model.quantize`), with the official names:

    f_to_idx(f)              f_to_idxBl_or_fhat(f, to_fhat=False)   ids per scale
    f_to_fhat(f)             f_to_idxBl_or_fhat(f, to_fhat=True)    cumulative f_hat per scale
    embed_to_fhat(ms_h)      embed_to_fhat                           f_hat rebuilt from code vectors
    idx_to_var_input(ids)    idxBl_to_var_input                      VAR teacher-forcing input
    next_ar_input(si, ...)   get_next_autoregressive_input           VAR inference: next scale's input
    forward(f)               forward                                 training (straight-through + losses)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import dataclass_from_dict

# Same math as VAR's blocks (GroupNorm(32, eps 1e-6), swish, zero-pad-right/bottom stride-2
# downsampling, nearest x2 upsampling, dropout before the second conv) and no state of their own
# beyond the official names: reused. The attention block differs (fused qkv) and is defined below.
from .vq import Level, ResnetBlock, VQLosses, group_norm

IdsLike = Union[torch.Tensor, Sequence[torch.Tensor]]


# ============================================================================ configuration
@dataclass
class MSVQConfig:
    vocab_size: int = 4096
    z_channels: int = 32  # Cvae: width of the latent, the code vectors and Φ
    ch: int = 160  # base width (the official VQVAE constructor default is 128; the release uses 160)
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # hard-coded in the official VQVAE; exposed here
    num_res_blocks: int = 2  # per encoder level; the decoder uses one more (hard-coded officially)
    dropout: float = 0.0
    beta: float = 0.25  # commitment loss weight
    using_znorm: bool = False  # nearest code by cosine similarity instead of squared L2
    quant_conv_ks: int = 3  # kernel size of quant_conv / post_quant_conv
    quant_resi: float = 0.5  # Φ(h) = (1 - |r|) h + |r| conv3x3(h); |r| <= 1e-6 turns Φ off (identity)
    share_quant_resi: int = 4  # 0: one Φ per scale, 1: one shared Φ, K >= 2: K Φ spread over the scales
    default_qresi_counts: int = 0  # with share_quant_resi=0: number of Φ (0 = one per scale); else ignored
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # token map side per scale, small to large
    image_size: int = 256  # the only size the model takes: patch_nums[-1] * downsample

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        self.patch_nums = tuple(self.patch_nums)

        def positive_int(name, v):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MSVQConfig.{name} must be a positive int, got {v!r}")

        for name in ("vocab_size", "z_channels", "ch", "num_res_blocks", "quant_conv_ks", "image_size"):
            positive_int(name, getattr(self, name))
        for name in ("share_quant_resi", "default_qresi_counts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"MSVQConfig.{name} must be an int >= 0, got {v!r}")
        if not self.ch_mult:
            raise ValueError("MSVQConfig.ch_mult must not be empty")
        for m in self.ch_mult:
            positive_int("ch_mult entries", m)
        for m in self.ch_mult:
            if (self.ch * m) % 32:
                raise ValueError(f"MSVQConfig: every level width ch * ch_mult must be a multiple of 32 "
                                 f"(GroupNorm uses 32 groups), got ch={self.ch}, ch_mult={self.ch_mult}")
        if len(self.patch_nums) < 2:
            # the official Φ selection divides by (number of scales - 1)
            raise ValueError(f"MSVQConfig.patch_nums needs at least 2 scales, got {self.patch_nums}")
        for pn in self.patch_nums:
            positive_int("patch_nums entries", pn)
        if self.quant_conv_ks % 2 == 0:
            raise ValueError(f"MSVQConfig.quant_conv_ks must be odd (padding ks//2 keeps the size), "
                             f"got {self.quant_conv_ks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MSVQConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.beta < 0:
            raise ValueError(f"MSVQConfig.beta must be >= 0, got {self.beta}")
        if self.image_size != self.patch_nums[-1] * self.downsample:
            raise ValueError(
                f"MSVQConfig.image_size {self.image_size} does not match patch_nums[-1] * downsample = "
                f"{self.patch_nums[-1]} * {self.downsample} = {self.patch_nums[-1] * self.downsample}: the last "
                f"scale is the full latent grid")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def num_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def num_phi(self) -> int:
        """Number of Φ convs (also when Φ is off: then that many identities)."""
        if self.share_quant_resi == 0:
            return self.default_qresi_counts or len(self.patch_nums)
        return self.share_quant_resi

    @property
    def codebook_show_usage(self) -> bool:
        """Always True: the usage statistics buffer `ema_vocab_hit_SV` is part of every official file.
        (Same attribute as `VQConfig`, read by the stage-1 trainer.)"""
        return True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["patch_nums"] = list(self.patch_nums)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MSVQConfig":
        return dataclass_from_dict(cls, d)


# ============================================================================ encoder / decoder
class FusedAttnBlock(nn.Module):
    """Single-head self-attention over all positions with one fused 1x1 `qkv` conv (official AttnBlock)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x_BChw):
        B, C, H, W = x_BChw.shape
        qkv = self.qkv(self.norm(x_BChw)).view(B, 3, C, H * W)  # channel blocks [q; k; v]
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in qkv.unbind(1))  # (B, 1, HW, C) each
        h = F.scaled_dot_product_attention(q, k, v)  # softmax scale C**-0.5, as the official w_ratio
        h = h.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x_BChw + self.proj_out(h)


def ResolutionLevel(in_ch: int, out_ch: int, n_blocks: int, attn: bool, resample: Optional[str],
                    dropout: float) -> Level:
    """VAR's resolution level: our `Level` with the official names `block.{j}` and fused-qkv attention."""
    return Level(in_ch, out_ch, n_blocks, attn, resample, dropout, blocks_name="block", attn_block=FusedAttnBlock)


class MidBlock(nn.Module):
    """res -> attention -> res at the lowest resolution (keys mid.block_1, mid.attn_1, mid.block_2)."""

    def __init__(self, ch: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, dropout)
        self.attn_1 = FusedAttnBlock(ch)
        self.block_2 = ResnetBlock(ch, ch, dropout)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, config: MSVQConfig):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(3, config.ch, 3, padding=1)
        levels, in_ch = [], config.ch
        for i, out_ch in enumerate(widths):
            last = i == n - 1  # lowest resolution: attention after every block, no downsampling
            levels.append(ResolutionLevel(in_ch, out_ch, config.num_res_blocks, attn=last,
                                          resample=None if last else "down", dropout=config.dropout))
            in_ch = out_ch
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(in_ch, config.dropout)
        self.norm_out = group_norm(in_ch)
        self.conv_out = nn.Conv2d(in_ch, config.z_channels, 3, padding=1)

    def forward(self, x_B3HW):
        h = self.conv_in(x_B3HW)  # (B, ch, H, W)
        for level in self.down:
            h = level(h)  # (B, ch*ch_mult[-1], H/f, W/f) after the last level
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z_channels, H/f, W/f)


class Decoder(nn.Module):
    """`up` is indexed by level as the encoder's `down`: `up.{n-1}` (lowest resolution) runs first."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        n = len(config.ch_mult)
        in_ch = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, in_ch, 3, padding=1)
        self.mid = MidBlock(in_ch, config.dropout)
        levels = [None] * n
        for i in reversed(range(n)):  # construction follows execution order: lowest resolution first
            out_ch = config.ch * config.ch_mult[i]
            levels[i] = ResolutionLevel(in_ch, out_ch, config.num_res_blocks + 1, attn=i == n - 1,
                                        resample="up" if i != 0 else None, dropout=config.dropout)
            in_ch = out_ch
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(in_ch)
        self.conv_out = nn.Conv2d(in_ch, 3, 3, padding=1)

    def forward(self, z_BChw):
        h = self.mid(self.conv_in(z_BChw))  # (B, ch*ch_mult[-1], h, w)
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)  # (B, ch, H, W) after level 0
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)


# ============================================================================ Φ (quant_resi)
class Phi(nn.Conv2d):
    """Φ(h) = (1 - r) h + r conv3x3(h): a residual refinement of the upsampled code vectors."""

    def __init__(self, dim: int, quant_resi: float):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h_BChw):
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul(self.resi_ratio)


def phi_ticks(K: int) -> np.ndarray:
    """Positions in [0, 1] of K Φ convs; a scale at s / (S - 1) uses the nearest one (official rule)."""
    if K == 4:  # the release's setting: denser at the ends
        return np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K)
    return np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)


class PhiSet(nn.Module):
    """The K Φ convs and the rule picking one for a position in [0, 1].

    The state-dict layout depends on the sharing mode (official PhiNonShared / PhiShared /
    PhiPartiallyShared): share_quant_resi=0 -> `<k>.*` (one per scale), 1 -> `qresi.*`,
    K >= 2 -> `qresi_ls.<k>.*`. With Φ off (|quant_resi| <= 1e-6) every Φ is an identity (no keys).
    """

    def __init__(self, dim: int, quant_resi: float, share_quant_resi: int, count: int):
        super().__init__()
        phis = [Phi(dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity() for _ in range(count)]
        self.mode = {0: "per_scale", 1: "shared"}.get(share_quant_resi, "partial")
        if self.mode == "per_scale":
            for k, phi in enumerate(phis):
                self.add_module(str(k), phi)
        elif self.mode == "shared":
            self.qresi = phis[0]
        else:
            self.qresi_ls = nn.ModuleList(phis)
        self.ticks = phi_ticks(count)

    def __len__(self) -> int:
        return len(self.ticks)

    def phi(self, k: int) -> nn.Module:
        if self.mode == "per_scale":
            return self._modules[str(k)]
        if self.mode == "shared":
            return self.qresi
        return self.qresi_ls[k]

    def index_at(self, at_0_1: float) -> int:
        """Index of the Φ nearest to `at_0_1` (first one on ties, as numpy's argmin)."""
        if self.mode == "shared":
            return 0
        return int(np.argmin(np.abs(self.ticks - at_0_1)))

    def at(self, at_0_1: float) -> nn.Module:
        return self.phi(self.index_at(at_0_1))


# ============================================================================ quantizer
@dataclass
class MSVQLosses(VQLosses):
    """VQLosses of a multi-scale quantizer: codebook / commitment are means over the scales."""
    usage_per_scale: Optional[list[float]] = None  # official usage metric per scale, in [0, 1]


class MultiScaleQuantizer(nn.Module):
    """Residual quantisation over the scales `config.patch_nums` (official VectorQuantizer2).

    Every method takes/returns float tensors in channels-first layout; ids are int64 (B, pn*pn).
    Nothing here depends on `self.training`; no collective communication happens inside.
    """

    def __init__(self, config: MSVQConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.Cvae = config.vocab_size, config.z_channels
        self.patch_nums = tuple(config.patch_nums)
        self.beta, self.using_znorm = config.beta, config.using_znorm
        self.quant_resi = PhiSet(self.Cvae, config.quant_resi, config.share_quant_resi, config.num_phi)
        # EMA of per-scale code hits (usage statistics only); updated by forward(track_usage=True)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), self.vocab_size))
        self.hit_updates = 0  # official `record_hit`; not saved (a statistics warm-up counter)
        self.embedding = nn.Embedding(self.vocab_size, self.Cvae)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def grid(self) -> int:
        """Side of the full-resolution latent (the last scale)."""
        return self.patch_nums[-1]

    # ---- small pieces ----------------------------------------------------------------------------
    def phi(self, si: int) -> nn.Module:
        """The Φ of scale `si` (nearest tick to si / (S - 1))."""
        return self.quant_resi.at(si / (self.num_scales - 1))

    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """(N, C) -> nearest code ids (N,): squared L2, or cosine similarity with using_znorm; in float32
        whatever the quantizer's precision (a bf16 distance would pick other codes)."""
        E_VC, z_NC = self.embedding.weight.detach().float(), z_NC.float()
        if self.using_znorm:
            return torch.argmax(F.normalize(z_NC, dim=-1) @ F.normalize(E_VC, dim=-1).T, dim=1)
        d_NV = z_NC.square().sum(1, keepdim=True) + E_VC.square().sum(1)
        d_NV = torch.addmm(d_NV, z_NC, E_VC.T, alpha=-2)
        return torch.argmin(d_NV, dim=1)

    def embed_scale(self, idx_Bl: torch.Tensor) -> torch.Tensor:
        """ids (B, pn*pn) -> code vectors as a map (B, Cvae, pn, pn)."""
        B, L = idx_Bl.shape
        pn = math.isqrt(L)
        if pn * pn != L:
            raise ValueError(f"{L} ids per image do not form a square token map")
        return self.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cvae, pn, pn)

    def _up(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return F.interpolate(h_BChw, size=(self.grid, self.grid), mode="bicubic")

    @staticmethod
    def _area(f_BChw: torch.Tensor, pn: int) -> torch.Tensor:
        return F.interpolate(f_BChw, size=(pn, pn), mode="area")

    def _check_f(self, f_BChw: torch.Tensor) -> None:
        n = self.grid
        if f_BChw.ndim != 4 or f_BChw.shape[1] != self.Cvae or tuple(f_BChw.shape[-2:]) != (n, n):
            raise ValueError(f"expected a latent of shape (B, {self.Cvae}, {n}, {n}) (patch_nums[-1] = {n}), "
                             f"got {tuple(f_BChw.shape)}")

    def check_ids(self, idx_list: Sequence[torch.Tensor], num_scales: Optional[int] = None) -> None:
        """Ids per scale: `num_scales` (default all) integer tensors (B, pn*pn), ids in [0, vocab_size)."""
        n = self.num_scales if num_scales is None else num_scales
        if isinstance(idx_list, torch.Tensor) or len(idx_list) != n:
            got = "a tensor" if isinstance(idx_list, torch.Tensor) else f"{len(idx_list)}"
            raise ValueError(f"expected a list of {n} id tensors (one per scale, patch_nums {self.patch_nums}), "
                             f"got {got}")
        B = idx_list[0].shape[0] if idx_list[0].ndim else None
        for si, idx in enumerate(idx_list):
            pn = self.patch_nums[si]
            if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
                raise ValueError(f"scale {si}: code ids must be an integer tensor, got dtype {idx.dtype}")
            if idx.ndim != 2 or idx.shape[1] != pn * pn or idx.shape[0] != B:
                raise ValueError(f"scale {si}: expected ids of shape ({B}, {pn * pn}) (pn = {pn}), "
                                 f"got {tuple(idx.shape)}")
            if idx.numel() and idx.device.type != "meta":
                lo, hi = int(idx.min()), int(idx.max())
                if lo < 0 or hi >= self.vocab_size:
                    raise ValueError(f"scale {si}: code id {lo if lo < 0 else hi} out of range [0, {self.vocab_size})")

    # ---- encoding: f -> ids / f_hat ----------------------------------------------------------------
    @torch.no_grad()
    def quantize_residual(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """f (B, C, n, n) -> (ids per scale [(B, pn*pn)], cumulative f_hat per scale [(B, C, n, n)]).

        At scale s the residual is area-downsampled to pn x pn (not at the last scale), matched to
        its nearest code, and the code map, bicubic-upsampled to n x n (not at the last scale) and
        passed through Φ, is added to f_hat and taken off the residual.
        """
        self._check_f(f_BChw)
        B, C = f_BChw.shape[:2]
        SN = self.num_scales
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        idx_list, fhat_list = [], []
        for si, pn in enumerate(self.patch_nums):
            rest = self._area(f_rest, pn) if si != SN - 1 else f_rest  # (B, C, pn, pn)
            idx_Bl = self.nearest_code(rest.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
            h_BChw = self.embed_scale(idx_Bl)
            h_BChw = self.phi(si)(self._up(h_BChw) if si != SN - 1 else h_BChw)  # (B, C, n, n)
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw
            idx_list.append(idx_Bl)
            fhat_list.append(f_hat)
        return idx_list, fhat_list

    def f_to_idx(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """f (B, C, n, n) -> ids per scale [(B, pn*pn) int64] (official f_to_idxBl_or_fhat(to_fhat=False))."""
        return self.quantize_residual(f_BChw)[0]

    def f_to_fhat(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """f (B, C, n, n) -> cumulative f_hat after each scale [(B, C, n, n)] (to_fhat=True)."""
        return self.quantize_residual(f_BChw)[1]

    # ---- decoding: code vectors -> f_hat -------------------------------------------------------------
    def embed_to_fhat(self, ms_h_BChw: Sequence[torch.Tensor], all_to_max_scale: bool = True,
                      last_one: bool = False) -> Union[torch.Tensor, list[torch.Tensor]]:
        """Code maps per scale [(B, C, pn, pn)] -> cumulative f_hat per scale (or only the last one).

        all_to_max_scale=True (what VQVAE training and inference use): every map is upsampled to
        n x n before Φ. False (official "experimental only" branch): f_hat itself is carried from
        scale to scale at the scale's size, bicubic-resized, and each map is added at its own size.
        """
        if len(ms_h_BChw) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} code maps (one per scale), got {len(ms_h_BChw)}")
        B, SN = ms_h_BChw[0].shape[0], self.num_scales
        out = []
        if all_to_max_scale:
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, self.grid, self.grid, dtype=torch.float32)
            for si, h_BChw in enumerate(ms_h_BChw):
                f_hat = f_hat + self.phi(si)(self._up(h_BChw) if si < SN - 1 else h_BChw)
                out.append(f_hat)
        else:
            pn0 = self.patch_nums[0]
            f_hat = ms_h_BChw[0].new_zeros(B, self.Cvae, pn0, pn0, dtype=torch.float32)
            for si, pn in enumerate(self.patch_nums):
                f_hat = F.interpolate(f_hat, size=(pn, pn), mode="bicubic") + self.phi(si)(ms_h_BChw[si])
                out.append(f_hat)
        return out[-1] if last_one else out

    def idx_to_fhat(self, idx_list: Sequence[torch.Tensor], last_one: bool = False):
        """Ids per scale -> cumulative f_hat per scale (or the last one) at full size."""
        self.check_ids(idx_list)
        return self.embed_to_fhat([self.embed_scale(i) for i in idx_list], all_to_max_scale=True, last_one=last_one)

    # ---- VAR training: teacher-forcing input ------------------------------------------------------------
    def idx_to_var_input(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Ground-truth ids per scale -> VAR's input for scales 1.. (B, L - pn_0^2, C), channels last.

        For s = 0 .. S-2: f_hat += Φ_s(bicubic_up(code map s)), and f_hat area-downsampled to the
        next scale's size is that scale's input (official idxBl_to_var_input). The last scale's ids
        are not needed (a list of S-1 is accepted).
        """
        SN = self.num_scales
        self.check_ids(idx_list[:SN - 1], SN - 1)
        B = idx_list[0].shape[0]
        f_hat = idx_list[0].new_zeros(B, self.Cvae, self.grid, self.grid, dtype=torch.float32)
        inputs = []
        for si in range(SN - 1):
            f_hat = f_hat + self.phi(si)(self._up(self.embed_scale(idx_list[si])))
            pn_next = self.patch_nums[si + 1]
            inputs.append(self._area(f_hat, pn_next).flatten(2).transpose(1, 2))  # (B, pn_next^2, C)
        return torch.cat(inputs, dim=1)

    # ---- VAR inference: the next scale's input ---------------------------------------------------------
    def next_ar_input(self, si: int, f_hat_BChw: torch.Tensor,
                      h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After sampling scale `si`: (f_hat + Φ(up(h)), input map of scale si+1).

        h_BChw: the sampled code map (B, C, pn_si, pn_si) (at the last scale it must be n x n).
        Returns the new f_hat (B, C, n, n) and the next scale's map, f_hat area-downsampled to
        pn_{si+1} (at the last scale: f_hat itself). Unlike the official
        get_next_autoregressive_input, `f_hat_BChw` is not modified in place: use the returned one.
        """
        SN = self.num_scales
        if not 0 <= si < SN:
            raise ValueError(f"scale index {si} out of range [0, {SN})")
        if si != SN - 1:
            f_hat_BChw = f_hat_BChw + self.phi(si)(self._up(h_BChw))
            return f_hat_BChw, self._area(f_hat_BChw, self.patch_nums[si + 1])
        if tuple(h_BChw.shape[-2:]) != (self.grid, self.grid):
            raise ValueError(f"the last scale's code map must be {self.grid}x{self.grid}, got {tuple(h_BChw.shape)}")
        f_hat_BChw = f_hat_BChw + self.phi(si)(h_BChw)
        return f_hat_BChw, f_hat_BChw

    # ---- training ---------------------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor, track_usage: bool = False) -> tuple[torch.Tensor, MSVQLosses]:
        """Training step: f (B, C, n, n) -> (f_hat with straight-through gradient to f, MSVQLosses).

        Per scale s (cumulative f_hat_s): codebook term mse(f_hat_s, sg[f]) trains the codebook and
        Φ, commitment term beta * mse(sg[f_hat_s], f) trains the encoder; both averaged over the
        scales (their sum is the official `mean_vq_loss`). `track_usage=True` folds this batch's
        code hits into `ema_vocab_hit_SV` (local counts: under data parallelism, reduce the buffer
        yourself) and reports the official usage metric. Runs in float32 with autocast off.
        """
        self._check_f(f_BChw)
        with torch.autocast(device_type=f_BChw.device.type, enabled=False):
            f_BChw = f_BChw.float()
            B, C, n, _ = f_BChw.shape
            SN = self.num_scales
            f_no_grad = f_BChw.detach()
            f_rest = f_no_grad.clone()  # only used to pick ids: never needs a gradient
            f_hat = torch.zeros_like(f_rest)
            codebook = commitment = f_BChw.new_zeros(())
            hits_SV = []
            for si, pn in enumerate(self.patch_nums):
                rest = self._area(f_rest, pn) if si != SN - 1 else f_rest
                idx_N = self.nearest_code(rest.permute(0, 2, 3, 1).reshape(-1, C))
                hits_SV.append(idx_N.bincount(minlength=self.vocab_size).float())
                h_BChw = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)  # (B, C, pn, pn)
                h_BChw = self.phi(si)(self._up(h_BChw) if si != SN - 1 else h_BChw.contiguous())
                f_hat = f_hat + h_BChw
                f_rest = f_rest - h_BChw.detach()
                codebook = codebook + F.mse_loss(f_hat, f_no_grad)
                commitment = commitment + F.mse_loss(f_hat.detach(), f_BChw)
            losses = MSVQLosses(codebook=codebook / SN, commitment=self.beta * commitment / SN)
            # straight-through: the value of f_hat, the gradient of f (official expression)
            f_hat_st = (f_hat.detach() - f_no_grad).add(f_BChw)
        if track_usage:
            self.record_hits(hits_SV)
            margin = B * n * n / self.vocab_size * 0.08  # official threshold (one process)
            losses.usage_per_scale = [float((ema >= margin).float().mean()) for ema in self.ema_vocab_hit_SV]
            losses.usage = sum(losses.usage_per_scale) / SN
        return f_hat_st, losses

    @torch.no_grad()
    def record_hits(self, hits_SV: Sequence[torch.Tensor]) -> None:
        """Fold per-scale hit counts [(V,)] into the EMA buffer (official rule: the counter advances
        once per scale, so only scale 0 of the very first call is copied, later ones mix in)."""
        for si, hit_V in enumerate(hits_SV):
            ema_V = self.ema_vocab_hit_SV[si]
            if self.hit_updates == 0:
                ema_V.copy_(hit_V)
            elif self.hit_updates < 100:
                ema_V.mul_(0.9).add_(hit_V.mul(0.1))
            else:
                ema_V.mul_(0.99).add_(hit_V.mul(0.01))
            self.hit_updates += 1


# ============================================================================ the VQVAE
class MSVQModel(nn.Module):
    """VAR's VQVAE: encoder, multi-scale quantizer, decoder (official class VQVAE)."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = MultiScaleQuantizer(config)
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)

    # ---- sizes --------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.config.vocab_size

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    @property
    def num_tokens(self) -> int:
        """Tokens per image over all scales, L = sum(pn^2)."""
        return self.config.num_tokens

    @property
    def scale_ranges(self) -> list[tuple[int, int]]:
        """(begin, end) of every scale inside flat ids (B, L)."""
        ends = np.cumsum([pn * pn for pn in self.patch_nums]).tolist()
        return [(e - pn * pn, e) for e, pn in zip(ends, self.patch_nums)]

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def grid_size(self, image_size) -> tuple[int, int]:
        """Latent grid (h, w) of the last scale for an image size (int or (H, W)); it must be the model's."""
        H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if H != self.image_size or W != self.image_size:
            raise ValueError(f"this tokenizer only takes {self.image_size}x{self.image_size} images "
                             f"(patch_nums[-1] {self.patch_nums[-1]} x downsample {self.downsample}), got {H}x{W}")
        return self.patch_nums[-1], self.patch_nums[-1]

    # ---- validation -----------------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected floating-point images in [-1, 1], got dtype {images.dtype}")
        self.grid_size(tuple(images.shape[-2:]))

    def as_id_list(self, ids: IdsLike) -> list[torch.Tensor]:
        """Ids per scale (list) or flat ids (B, L) -> validated list of (B, pn*pn)."""
        idx_list = self.split_flat(ids) if isinstance(ids, torch.Tensor) else list(ids)
        self.quantize.check_ids(idx_list)
        return idx_list

    # ---- flat ids ----------------------------------------------------------------------------------------
    def split_flat(self, ids_BL: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) ids, scales concatenated in order -> [(B, pn*pn)] per scale (views)."""
        if ids_BL.ndim != 2 or ids_BL.shape[1] != self.num_tokens:
            raise ValueError(f"expected flat ids of shape (B, {self.num_tokens}) (sum of pn^2 over patch_nums "
                             f"{self.patch_nums}), got {tuple(ids_BL.shape)}")
        return list(ids_BL.split([pn * pn for pn in self.patch_nums], dim=1))

    def join_ids(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """[(B, pn*pn)] per scale -> (B, L)."""
        self.quantize.check_ids(idx_list)
        return torch.cat(list(idx_list), dim=1)

    # ---- encoding ------------------------------------------------------------------------------------------
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> f = quant_conv(encoder(images)) (B, Cvae, n, n), before quantisation."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> ids per scale [(B, pn*pn) int64] (official img_to_idxBl)."""
        return self.quantize.f_to_idx(self.encode_latent(images))

    @torch.no_grad()
    def encode_flat(self, images: torch.Tensor) -> torch.Tensor:
        """images -> (B, L) int64: all scales' ids concatenated in scale order (what token shards store)."""
        return torch.cat(self.encode(images), dim=1)

    @torch.no_grad()
    def quantize_latent(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f -> (final f_hat (B, C, n, n), flat ids (B, L)): the evaluation path of the stage-1 trainer."""
        idx_list, fhat_list = self.quantize.quantize_residual(f_BChw)
        return fhat_list[-1], torch.cat(idx_list, dim=1)

    # ---- decoding ------------------------------------------------------------------------------------------
    def decode_latent(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """f_hat (B, C, n, n) -> images (B, 3, H, W), not clamped. f_hat may come from a quantizer in another
        precision (bf16 next-scale sampling): the decoder runs in its own."""
        return self.decoder(self.post_quant_conv(f_hat_BChw.to(self.post_quant_conv.weight.dtype)))

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """f_hat (B, C, n, n) -> images clamped to [-1, 1] (official fhat_to_img)."""
        return self.decode_latent(f_hat_BChw).clamp(-1, 1)

    def decode(self, ids: IdsLike) -> torch.Tensor:
        """Ids per scale (list) or flat (B, L) -> images (B, 3, H, W) in [-1, 1] from all scales
        (official idxBl_to_img(same_shape=True, last_one=True))."""
        return self.fhat_to_img(self.quantize.idx_to_fhat(self.as_id_list(ids), last_one=True))

    def decode_per_scale(self, ids: IdsLike) -> list[torch.Tensor]:
        """Images from the first 1, 2, ..., S scales (official idxBl_to_img(same_shape=True, last_one=False))."""
        return [self.fhat_to_img(f_hat) for f_hat in self.quantize.idx_to_fhat(self.as_id_list(ids))]

    # ---- training ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, track_usage: bool = False) -> tuple[torch.Tensor, MSVQLosses]:
        """Stage-1 step: images (B, 3, H, W) -> (recon (B, 3, H, W), not clamped; MSVQLosses)."""
        f_hat, losses = self.quantize(self.encode_latent(images), track_usage=track_usage)
        return self.decode_latent(f_hat), losses

    def codebook_usage(self) -> float:
        """Fraction of the codebook with a non-zero hit EMA at some scale (needs track_usage steps)."""
        return float((self.quantize.ema_vocab_hit_SV > 0).any(dim=0).float().mean())


# ============================================================================ named configurations
MSVQ_CONFIGS: dict[str, MSVQConfig] = {
    # official VAR vae_ch160v4096z32: 108,948,355 parameters, 680 tokens over 10 scales at 256 px
    "msvq-f16": MSVQConfig(),
    # 64x64 demo data (emoji): 8x8 latent, 6 scales, 130 tokens
    # cosine code lookup: with squared L2 this small codebook collapsed to 6% usage on the emoji data
    "msvq-demo": MSVQConfig(vocab_size=1024, z_channels=32, ch=64, ch_mult=(1, 1, 2, 2),
                            patch_nums=(1, 2, 3, 4, 6, 8), image_size=64, using_znorm=True),
    # tiny f4 tokenizer for tests (CPU, seconds): 16x16 images, 4 scales, 30 tokens
    "msvq-tiny": MSVQConfig(vocab_size=256, z_channels=8, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                            patch_nums=(1, 2, 3, 4), image_size=16),
}


def list_msvq() -> list[str]:
    return sorted(MSVQ_CONFIGS)


def create_msvq(name: str, **overrides) -> MSVQModel:
    """Build a randomly initialised multi-scale tokenizer from a named config, with field overrides."""
    if name not in MSVQ_CONFIGS:
        raise ValueError(f"unknown multi-scale tokenizer {name!r}; available: {list_msvq()}")
    return MSVQModel(MSVQConfig.from_dict({**MSVQ_CONFIGS[name].to_dict(), **overrides}))
