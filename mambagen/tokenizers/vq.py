"""LlamaGen's VQ image tokenizer (VQ-16 / VQ-8), also the stage-1 tokenizer of AiM.

A convolutional encoder maps an image in [-1, 1] to a latent grid downsampled by
2**(levels - 1); each latent vector is l2-normalised and replaced by the nearest
(normalised) codebook row. The decoder mirrors the encoder. Module and parameter
names follow the official `tokenizer_image/vq_model.py` so that released weights
load without renaming (see `mambagen.convert.llamagen_vq`).

Public API (batch first, images (B, 3, H, W) float in [-1, 1], ids (B, h*w) int64
in raster order):

    model = create_tokenizer("vq-f16")
    ids = model.encode(images)               # (B, h*w)
    images = model.decode(ids, grid=(h, w))  # (B, 3, H, W), not clamped
    recon, losses = model(images)            # stage-1 training
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import dataclass_from_dict

# Length of the official rolling buffer of recently used code ids (a constant there too).
USAGE_BUFFER_LEN = 65536


@dataclass
class VQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True  # keep the `quantize.codebook_used` buffer (it is in official files)
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    dropout_p: float = 0.0
    ch: int = 128  # base width; the official VQModel always uses the Encoder/Decoder default
    num_res_blocks: int = 2  # per encoder level; the decoder uses one more
    image_size: int = 256  # informational default for pipelines; the model takes any multiple of `downsample`

    def __post_init__(self):
        self.encoder_ch_mult = tuple(self.encoder_ch_mult)
        self.decoder_ch_mult = tuple(self.decoder_ch_mult)

        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"VQConfig.{name} must be a positive int, got {v!r}")

        for name in ("codebook_size", "codebook_embed_dim", "z_channels", "ch", "num_res_blocks", "image_size"):
            positive_int(name)
        for name in ("encoder_ch_mult", "decoder_ch_mult"):
            mult = getattr(self, name)
            if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
                raise ValueError(f"VQConfig.{name} must be a non-empty sequence of positive ints, got {mult!r}")
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError(
                f"VQConfig.encoder_ch_mult {self.encoder_ch_mult} and decoder_ch_mult {self.decoder_ch_mult} "
                "must have the same length: the decoder has to upsample by the factor the encoder downsamples")
        if self.ch % 32 != 0:
            raise ValueError(f"VQConfig.ch must be a multiple of 32 (GroupNorm uses 32 groups), got {self.ch}")
        if not 0.0 <= self.dropout_p < 1.0:
            raise ValueError(f"VQConfig.dropout_p must be in [0, 1), got {self.dropout_p}")
        if self.commit_loss_beta < 0:
            raise ValueError(f"VQConfig.commit_loss_beta must be >= 0, got {self.commit_loss_beta}")
        if self.entropy_loss_ratio < 0:
            raise ValueError(f"VQConfig.entropy_loss_ratio must be >= 0, got {self.entropy_loss_ratio}")
        if self.codebook_show_usage and self.codebook_size > 2 ** 24:
            raise ValueError(f"VQConfig.codebook_size {self.codebook_size} is too large for the float32 usage "
                             "buffer (ids above 2**24 are not exact); set codebook_show_usage=False")
        if self.image_size % self.downsample != 0:
            raise ValueError(f"VQConfig.image_size {self.image_size} must be a multiple of the downsampling "
                             f"factor {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["encoder_ch_mult"] = list(self.encoder_ch_mult)
        d["decoder_ch_mult"] = list(self.decoder_ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VQConfig":
        return dataclass_from_dict(cls, d)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # 1x1 projection of the skip path only where the width changes
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, separate 1x1 q/k/v convs."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = group_norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v))  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # softmax scale 1/sqrt(C), as in the official block
        h = h.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        # asymmetric zero padding (right/bottom only) keeps H/2 exactly with a 3x3 stride-2 conv
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class Level(nn.Module):
    """One resolution: res blocks (each followed by attention where `attn`), then optional resampling.

    The block list is registered under `blocks_name`, the official state-dict name: `res` in LlamaGen's
    VQ, `block` in VAR's VQVAE (which also passes its fused-qkv attention as `attn_block`).
    """

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, attn: bool, resample: Optional[str], dropout: float,
                 blocks_name: str = "res", attn_block: type = None):
        super().__init__()
        self.blocks_name = blocks_name
        setattr(self, blocks_name, nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch, dropout)
                                                 for j in range(n_blocks)))
        attn_block = attn_block or AttnBlock
        self.attn = nn.ModuleList(attn_block(out_ch) for _ in range(n_blocks)) if attn else nn.ModuleList()
        self.resample = resample
        if resample == "down":
            self.downsample = Downsample(out_ch)
        elif resample == "up":
            self.upsample = Upsample(out_ch)

    def forward(self, x):
        for j, block in enumerate(getattr(self, self.blocks_name)):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        if self.resample == "down":
            x = self.downsample(x)  # (B, C, H/2, W/2)
        elif self.resample == "up":
            x = self.upsample(x)  # (B, C, 2H, 2W)
        return x


def mid_blocks(ch: int, dropout: float) -> nn.ModuleList:
    # res -> attention -> res at the lowest resolution (keys mid.0, mid.1, mid.2)
    return nn.ModuleList([ResnetBlock(ch, ch, dropout), AttnBlock(ch), ResnetBlock(ch, ch, dropout)])


class Encoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        widths = [config.ch * m for m in config.encoder_ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(3, config.ch, 3, padding=1)
        levels, in_ch = [], config.ch
        for i, out_ch in enumerate(widths):
            last = i == n - 1  # lowest resolution: attention, no downsampling
            levels.append(Level(in_ch, out_ch, config.num_res_blocks, attn=last,
                                resample=None if last else "down", dropout=config.dropout_p))
            in_ch = out_ch
        self.conv_blocks = nn.ModuleList(levels)
        self.mid = mid_blocks(in_ch, config.dropout_p)
        self.norm_out = group_norm(in_ch)
        self.conv_out = nn.Conv2d(in_ch, config.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.conv_blocks:
            h = level(h)  # (B, ch*mult, H/f, W/f) after the last level
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z_channels, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        widths = [config.ch * m for m in reversed(config.decoder_ch_mult)]  # execution order: lowest resolution first
        n = len(widths)
        in_ch = widths[0]
        self.conv_in = nn.Conv2d(config.z_channels, in_ch, 3, padding=1)
        self.mid = mid_blocks(in_ch, config.dropout_p)
        levels = []
        for i, out_ch in enumerate(widths):
            levels.append(Level(in_ch, out_ch, config.num_res_blocks + 1, attn=i == 0,
                                resample=None if i == n - 1 else "up", dropout=config.dropout_p))
            in_ch = out_ch
        self.conv_blocks = nn.ModuleList(levels)
        self.norm_out = group_norm(in_ch)
        self.conv_out = nn.Conv2d(in_ch, 3, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)  # (B, ch*mult[-1], h, w)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)  # (B, ch, H, W) after the last level
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-row lookup; with `l2_norm`, latents and rows are compared on the unit sphere."""

    def __init__(self, codebook_size: int, dim: int, l2_norm: bool = True, usage_buffer: bool = True):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, dim)
        if usage_buffer:
            # float32 like the official buffer; zero-initialised, so id 0 counts as used until it rolls out
            self.register_buffer("codebook_used", torch.zeros(USAGE_BUFFER_LEN))
        else:
            self.codebook_used = None
        self.reset_parameters()

    def reset_parameters(self):
        n = self.embedding.num_embeddings
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / n, 1.0 / n)
            if self.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))

    def codebook(self) -> torch.Tensor:
        """The rows latents are matched against, (K, C): normalised when `l2_norm`."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.codebook())  # (..., C)

    def match(self, z: torch.Tensor):
        """z (B, C, h, w) -> (zn, zq, dist, ids): zn/zq (B, h, w, C), dist (B*h*w, K), ids (B, h*w).

        zn is the (normalised) latent, zq the chosen code vectors, dist the squared distances.
        """
        B, C, h, w = z.shape
        zn = z.permute(0, 2, 3, 1)  # (B, h, w, C)
        if self.l2_norm:
            zn = F.normalize(zn, dim=-1)
        codes = self.codebook()  # (K, C)
        flat = zn.reshape(-1, C)  # (N, C)
        dist = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()  # (N, K)
        ids = dist.argmin(dim=1)  # (N,)
        zq = codes[ids].view(B, h, w, C)
        return zn, zq, dist, ids.view(B, h * w)

    def forward(self, z: torch.Tensor):
        """z (B, C, h, w) -> (quant (B, C, h, w), ids (B, h*w) int64)."""
        zn, zq, _, ids = self.match(z)
        if torch.is_grad_enabled() and z.requires_grad:
            zq = zn + (zq - zn).detach()  # straight-through: the decoder's gradient flows to the encoder
        return zq.permute(0, 3, 1, 2), ids

    @torch.no_grad()
    def record_usage(self, ids: torch.Tensor) -> None:
        """Append `ids` to the rolling buffer of recently used codes (oldest entries drop out)."""
        if self.codebook_used is None:
            raise ValueError("this tokenizer has no usage buffer (VQConfig.codebook_show_usage=False)")
        buf = self.codebook_used
        recent = torch.cat([buf, ids.reshape(-1).to(buf.dtype)])[-buf.numel():]
        buf.copy_(recent)

    def usage(self) -> float:
        """Fraction of the codebook that appears in the usage buffer (the official metric)."""
        if self.codebook_used is None:
            raise ValueError("this tokenizer has no usage buffer (VQConfig.codebook_show_usage=False)")
        return self.codebook_used.unique().numel() / self.embedding.num_embeddings


def entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Per-sample entropy minus entropy of the batch-average code distribution (official formula).

    Low per-sample entropy makes assignments confident; high average entropy spreads use over the codebook.
    """
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature  # (N, K)
    probs = logits.softmax(dim=-1)
    log_probs = logits.log_softmax(dim=-1)  # the official +1e-5 shift of the logits cancels out here
    avg_probs = probs.mean(dim=0)  # (K,)
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return sample_entropy - avg_entropy


@dataclass
class VQLosses:
    codebook: torch.Tensor  # mean ||zq - sg[z]||^2: moves code vectors towards the latents
    commitment: torch.Tensor  # beta * mean ||sg[zq] - z||^2: keeps the encoder near its codes
    entropy: Optional[torch.Tensor] = None  # entropy_loss_ratio * entropy loss, only when the ratio > 0
    usage: Optional[float] = None  # fraction of codes in the usage buffer, only when tracking usage

    @property
    def total(self) -> torch.Tensor:
        total = self.codebook + self.commitment
        return total if self.entropy is None else total + self.entropy


class VQModel(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.codebook_embed_dim,
                                        config.codebook_l2_norm, config.codebook_show_usage)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # ---- validation -------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.downsample
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected floating-point images in [-1, 1], got dtype {images.dtype}")
        H, W = images.shape[-2:]
        if H % f or W % f:
            raise ValueError(f"image height and width must be multiples of the downsampling factor {f}, got {H}x{W}")

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"code ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and ids.device.type != "meta":
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.codebook_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"code id {bad} out of range [0, {self.codebook_size})")

    def grid_size(self, image_size) -> tuple[int, int]:
        """Token grid (h, w) for an image size (int or (H, W))."""
        H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        f = self.downsample
        if H % f or W % f:
            raise ValueError(f"image size {H}x{W} is not a multiple of the downsampling factor {f}")
        return H // f, W // f

    # ---- encoding ---------------------------------------------------------------------------

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> continuous latent z (B, C, H/f, W/f), before quantisation."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> code ids (B, h*w) int64, raster order."""
        _, ids = self.quantize(self.encode_latent(images))
        return ids

    # ---- decoding ---------------------------------------------------------------------------

    def embed_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> code vectors (..., C), normalised when codebook_l2_norm."""
        self._check_ids(ids)
        return self.quantize.embed(ids)

    def decode_latent(self, quant: torch.Tensor) -> torch.Tensor:
        """quant (B, C, h, w) -> images (B, 3, h*f, w*f), not clamped."""
        C = self.config.codebook_embed_dim
        if quant.ndim != 4 or quant.shape[1] != C:
            raise ValueError(f"expected a latent of shape (B, {C}, h, w), got {tuple(quant.shape)}")
        return self.decoder(self.post_quant_conv(quant))

    def decode(self, ids: torch.Tensor, grid=None) -> torch.Tensor:
        """ids (B, h*w) -> images (B, 3, h*f, w*f), not clamped. `grid` = (h, w) or int; default square."""
        if ids.ndim != 2:
            raise ValueError(f"expected code ids of shape (B, h*w), got {tuple(ids.shape)}")
        B, L = ids.shape
        if grid is None:
            side = math.isqrt(L)
            if side * side != L:
                raise ValueError(f"{L} code ids do not form a square grid; pass grid=(h, w)")
            grid = (side, side)
        h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
        if h * w != L:
            raise ValueError(f"grid {h}x{w} needs {h * w} code ids per image, got {L}")
        quant = self.embed_codes(ids).view(B, h, w, -1).permute(0, 3, 1, 2)  # (B, C, h, w)
        return self.decode_latent(quant)

    # ---- training ---------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, track_usage: bool = False):
        """Stage-1 step: images (B, 3, H, W) -> (recon (B, 3, H, W), VQLosses).

        `track_usage=True` appends this batch's ids to the `codebook_used` buffer and reports usage.
        """
        z = self.encode_latent(images)  # (B, C, h, w)
        zn, zq, dist, ids = self.quantize.match(z)  # zn, zq: (B, h, w, C)
        cfg = self.config
        losses = VQLosses(
            codebook=(zq - zn.detach()).pow(2).mean(),
            commitment=cfg.commit_loss_beta * (zq.detach() - zn).pow(2).mean(),
        )
        if cfg.entropy_loss_ratio > 0:
            losses.entropy = cfg.entropy_loss_ratio * entropy_loss(-dist)
        if track_usage:
            self.quantize.record_usage(ids)
            losses.usage = self.quantize.usage()
        quant = zn + (zq - zn).detach()  # straight-through estimator
        recon = self.decode_latent(quant.permute(0, 3, 1, 2))
        return recon, losses

    def codebook_usage(self) -> float:
        """Fraction of the codebook used among the last 65536 tracked ids."""
        return self.quantize.usage()


# ---- named configurations ---------------------------------------------------------------------

VQ_CONFIGS: dict[str, VQConfig] = {
    # official LlamaGen VQ-16 / AiM VQ-f16: 71,883,403 parameters, 16x16 tokens at 256 px
    "vq-f16": VQConfig(),
    # official LlamaGen VQ-8
    "vq-f8": VQConfig(encoder_ch_mult=(1, 2, 2, 4), decoder_ch_mult=(1, 2, 2, 4)),
    # small f8 tokenizer for 64x64 demo data (8x8 tokens)
    "vq-f8-small": VQConfig(codebook_size=1024, encoder_ch_mult=(1, 1, 2, 2), decoder_ch_mult=(1, 1, 2, 2),
                            z_channels=64, ch=64, num_res_blocks=1, image_size=64),
    # tiny f4 tokenizer for tests (CPU, seconds)
    "vq-tiny": VQConfig(codebook_size=256, encoder_ch_mult=(1, 1, 2), decoder_ch_mult=(1, 1, 2),
                        z_channels=32, ch=32, num_res_blocks=1, image_size=32),
}


def list_tokenizers() -> list[str]:
    return sorted(VQ_CONFIGS)


def create_tokenizer(name: str, **overrides) -> VQModel:
    """Build a randomly initialised tokenizer from a named config, with field overrides."""
    if name not in VQ_CONFIGS:
        raise ValueError(f"unknown tokenizer {name!r}; available: {list_tokenizers()}")
    config = VQConfig.from_dict({**VQ_CONFIGS[name].to_dict(), **overrides})
    return VQModel(config)
