"""Tokenizers: images <-> discrete ids. `create_tokenizer(name)` builds any registered config.

* VQ (LlamaGen VQ-f16 design): one token map per image, `encode(images) -> (B, h*w)`.
* MSVQ (VAR design): a pyramid of token maps; `encode_flat(images) -> (B, sum pn^2)`.

Each kind is declared once in `KINDS` (config and model classes, named configs, how a generator fits
it, its official converter and parity kinds); a family record names the kind its models take.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .msvq import MSVQ_CONFIGS, MSVQConfig, MSVQModel, create_msvq
from .vq import VQ_CONFIGS, VQConfig, VQModel
from .vq import create_tokenizer as create_vq


def _fit_vq(tokenizer) -> dict:
    grid = tokenizer.config.image_size // tokenizer.downsample
    return dict(vocab_size=tokenizer.codebook_size, num_tokens=grid * grid)


def _fit_msvq(tokenizer) -> dict:
    return dict(vocab_size=tokenizer.codebook_size, patch_nums=tuple(tokenizer.patch_nums),
                Cvae=tokenizer.config.z_channels)


def _vq_for(c):
    return create_vq("vq-f16", codebook_size=c.vocab_size, image_size=c.grid * 16)


def _msvq_for(c):
    return create_msvq("msvq-f16", vocab_size=c.vocab_size, z_channels=c.Cvae, patch_nums=tuple(c.patch_nums),
                       image_size=c.patch_nums[-1] * 16)


def _describe_vq(c) -> str:
    return f"codebook {c.codebook_size} x {c.codebook_embed_dim}, downsample {c.downsample}"


def _describe_msvq(c) -> str:
    return f"codebook {c.vocab_size} x {c.z_channels}, downsample {c.downsample}, scales {tuple(c.patch_nums)}"


def _convert_llamagen_vq(weights, official_config=None, **kw):
    from ..convert.llamagen_vq import load_official_llamagen_vq
    return load_official_llamagen_vq(weights, official_config, **kw)


def _convert_var_vqvae(weights, official_config=None, **kw):
    from ..convert.var_vqvae import load_official_var_vqvae
    return load_official_var_vqvae(weights, official_config, **kw)


@dataclass(frozen=True)
class TokenizerKind:
    name: str                         # config.json "family" of a tokenizer directory
    config: type
    model: type
    configs: dict                     # named configs
    create: Callable                  # name, **overrides -> a randomly initialised tokenizer
    multiscale: bool                  # ids of every scale (next-scale generators) or one map
    fit: Callable                     # tokenizer -> config values a generator needs to model its ids
    describe: Callable                # config -> one line for `mambagen info`
    official: str                     # `mambagen convert` name of its official checkpoint
    convert: Callable                 # official weights (+ config) -> tokenizer
    convert_help: str
    parity: tuple                     # golden-fixture kinds (tests/parity/<official>.py)
    demo: str                         # the small config a registered generator samples with by default
    shaped: Callable                  # generator config -> a random tokenizer whose ids it models (bench)


KINDS: dict[str, TokenizerKind] = {
    "vq": TokenizerKind("vq", VQConfig, VQModel, VQ_CONFIGS, create_vq, False, _fit_vq, _describe_vq,
                        "llamagen_vq", _convert_llamagen_vq, "the LlamaGen VQ-16 tokenizer (vq_ds16_c2i.pt)",
                        ("llamagen_vq",), "vq-tiny", _vq_for),
    "msvq": TokenizerKind("msvq", MSVQConfig, MSVQModel, MSVQ_CONFIGS, create_msvq, True, _fit_msvq,
                          _describe_msvq, "var_vqvae", _convert_var_vqvae,
                          "the VAR/M-VAR multi-scale VQVAE alone (vae_ch160v4096z32.pth)", ("var_vqvae", "var_quant"),
                          "msvq-tiny", _msvq_for),
}


# config fields that change which ids a tokenizer makes or what pixels they decode to (not its losses)
IDENTITY_FIELDS = ("codebook_size", "vocab_size", "codebook_embed_dim", "z_channels", "encoder_ch_mult",
                   "decoder_ch_mult", "ch_mult", "ch", "num_res_blocks", "image_size", "patch_nums", "using_znorm",
                   "quant_resi", "share_quant_resi")


def config_differences(a: dict, b: dict) -> list[str]:
    """'field a != b' for every identity field two tokenizer configs (dicts) disagree on."""
    def plain(v):
        return list(v) if isinstance(v, (tuple, list)) else v
    return [f"{k} {plain(a[k])} vs {plain(b[k])}" for k in IDENTITY_FIELDS
            if k in a and k in b and plain(a[k]) != plain(b[k])]


def check_same_tokenizer(expected: dict, given, what: str, expected_what: str) -> None:
    """Refuse `given` (a tokenizer) when its config differs from `expected` (a config dict) in any identity field."""
    diff = config_differences(expected, given.config.to_dict())
    if diff:
        raise ValueError(f"{what} is not the tokenizer {expected_what} (expected vs given): " + "; ".join(diff))


def kind_of(tokenizer) -> TokenizerKind:
    for kind in KINDS.values():
        if isinstance(tokenizer, kind.model):
            return kind
    raise TypeError(f"not a mambagen tokenizer: {type(tokenizer).__qualname__}")


def list_tokenizers() -> list[str]:
    return [name for kind in KINDS.values() for name in kind.configs]


def create_tokenizer(name: str, **overrides):
    """A randomly initialised tokenizer of a registered config (vq-f16, vq-tiny, msvq-f16, ...)."""
    for kind in KINDS.values():
        if name in kind.configs:
            return kind.create(name, **overrides)
    raise ValueError(f"unknown tokenizer {name!r}; available: {list_tokenizers()}")


def is_multiscale(tokenizer) -> bool:
    return kind_of(tokenizer).multiscale


def encode_ids(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, N) ids: raster order, or every scale in order for MSVQ."""
    return tokenizer.encode_flat(images) if is_multiscale(tokenizer) else tokenizer.encode(images)


def decode_ids(tokenizer, ids: torch.Tensor, grid: int | None = None) -> torch.Tensor:
    """(B, N) ids -> images in [-1, 1]; `grid`: the side of a single map that is not the tokenizer's own."""
    out = tokenizer.decode(ids) if is_multiscale(tokenizer) or grid is None else tokenizer.decode(ids, grid=grid)
    return out.clamp(-1, 1)


DECODE_CHUNK = 16


@torch.no_grad()
def decode_fixed(tokenizer, ids: torch.Tensor, grid: int | None = None, chunk: int = DECODE_CHUNK) -> torch.Tensor:
    """`decode_ids` in batches of exactly `chunk` rows (the last padded): convolutions choose their
    algorithm by shape, so with one shape an image's pixels depend on its ids only, not on how many
    images share its batch (sample-many's promise), and decoding stays batched."""
    out = []
    for part in ids.split(chunk):
        n = part.shape[0]
        if n < chunk:
            part = torch.cat([part, part[-1:].expand(chunk - n, -1)])
        out.append(decode_ids(tokenizer, part, grid)[:n])
    return torch.cat(out)
