"""Official ARPG (hp-l33/ARPG) checkpoints -> our ARPG. Pure functions.

Our modules use the official key names, so the state dict passes through (minus wrapper
prefixes); what the conversion does is check it and build the config. Official files
(`arpg_300m.pt`, ... and training checkpoints) are `torch.load` dicts with the weights under
'model' (or 'module' / 'state_dict'), often next to the training `argparse.Namespace` under
'args' (read safely: `mambagen.io` allow-lists that one class).
"""
from __future__ import annotations

import argparse
import re
from typing import Any

import torch

from ..io import CheckpointError, load_state_dict_strict, load_weights, unwrap_state_dict
from ..layers.mlp import llama_hidden_dim
from ..models.arpg import ARPG, ARPGConfig

# official `ModelArgs` defaults
OFFICIAL_DEFAULTS = dict(dim=4096, n_layer=32, n_head=32, multiple_of=256, ffn_dim_multiplier=None, rope_base=10000,
                         norm_eps=1e-5, initializer_range=0.02, token_dropout_p=0.1, attn_dropout_p=0.0,
                         resid_dropout_p=0.1, ffn_dropout_p=0.1, drop_path_rate=0.0, num_classes=1000,
                         class_dropout_prob=0.1, model_type="c2i", vocab_size=16384, cls_token_num=1, block_size=256)
# the official named sizes (`ARPG_models`), and their heads by (dim, n_layer) for files without a config
OFFICIAL_SIZES = {"ARPG-L": dict(n_layer=24, n_head=16, dim=1024), "ARPG-XL": dict(n_layer=36, n_head=20, dim=1280),
                  "ARPG-XXL": dict(n_layer=48, n_head=24, dim=1536)}
HEADS_BY_SHAPE = {(s["dim"], s["n_layer"]): s["n_head"] for s in OFFICIAL_SIZES.values()}

_KEY = re.compile(r"embeddings\.weight|norm\.weight|head\.weight|layers\.(norm|to_k|to_v)\.weight"
                  r"|layers\.self_dec\.\d+\.(attn\.(to_q|to_k|to_v|proj)|ffn\.(w1|w2|w3)|attn_norm|ffn_norm)\.weight"
                  r"|layers\.cross_dec\.\d+\.(attn\.(to_q|proj)|ffn\.(w1|w2|w3)|attn_norm|ffn_norm)\.weight")


def _known_sizes() -> str:
    return ", ".join(f"{name}: dim {s['dim']}, {s['n_layer']} layers" for name, s in OFFICIAL_SIZES.items())


def official_config_from_args(args: argparse.Namespace | dict) -> dict:
    """The `ModelArgs` values the official training script (`train_c2i.py`) builds from its
    command line (`--gpt-model`, `--vocab-size`, `--image-size`, `--downsample-size`, ...)."""
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    name = a.get("gpt_model")
    if name not in OFFICIAL_SIZES:
        raise CheckpointError(f"training args name the model {name!r}; known: {', '.join(OFFICIAL_SIZES)}")
    latent = a.get("image_size", 256) // a.get("downsample_size", 16)
    dropout = 0.0 if a.get("drop_path_rate", 0.0) > 0 else a.get("dropout_p", 0.1)
    return dict(OFFICIAL_SIZES[name], vocab_size=a.get("vocab_size", 16384), block_size=latent ** 2,
                num_classes=a.get("num_classes", 1000), cls_token_num=a.get("cls_token_num", 1),
                model_type=a.get("gpt_type", "c2i"), resid_dropout_p=dropout, ffn_dropout_p=dropout,
                token_dropout_p=a.get("token_dropout_p", 0.1))


def arpg_config_from_official(official: dict | argparse.Namespace) -> ARPGConfig:
    """Official `ModelArgs` fields (or the training `argparse.Namespace`) -> ARPGConfig.

    Missing fields take the official defaults, except `n_head`, which a known size's
    (dim, n_layer) decides. Fields the official model ignores (`drop_path_rate`) are dropped;
    other unknown keys (e.g. from a `PretrainedConfig.to_dict()`) are listed in `extra`.
    """
    if isinstance(official, argparse.Namespace) or "gpt_model" in official:
        official = official_config_from_args(official)
    o = dict(official)
    if "n_head" not in o and (o.get("dim"), o.get("n_layer")) in HEADS_BY_SHAPE:
        o["n_head"] = HEADS_BY_SHAPE[(o["dim"], o["n_layer"])]
    v = {**OFFICIAL_DEFAULTS, **{k: o[k] for k in OFFICIAL_DEFAULTS if k in o}}
    if v["model_type"] != "c2i":
        raise CheckpointError(f"only class-conditional ARPG ('c2i') is supported, got model_type {v['model_type']!r}")
    grid = int(v["block_size"] ** 0.5)
    if grid * grid != v["block_size"]:
        raise CheckpointError(f"block_size {v['block_size']} is not a square grid")
    ignored = sorted(set(o) - set(OFFICIAL_DEFAULTS))
    return ARPGConfig(
        dim=v["dim"], n_layer=v["n_layer"], n_head=v["n_head"], multiple_of=v["multiple_of"],
        ffn_dim_multiplier=v["ffn_dim_multiplier"], rope_base=v["rope_base"], norm_eps=v["norm_eps"],
        vocab_size=v["vocab_size"], num_classes=v["num_classes"], num_tokens=v["block_size"],
        class_dropout=v["class_dropout_prob"], token_dropout=v["token_dropout_p"], attn_dropout=v["attn_dropout_p"],
        resid_dropout=v["resid_dropout_p"], ffn_dropout=v["ffn_dropout_p"], cls_rope_zero=True,
        cls_token_num=v["cls_token_num"], init_std=v["initializer_range"],
        extra={"converted_from": "hp-l33/ARPG", **({"ignored_official_keys": ignored} if ignored else {})},
    )


def convert_arpg_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys are ours; strip the wrappers of training checkpoints (`module.`, `_orig_mod.`)
    and refuse anything that is not an ARPG key."""
    out = {}
    for k, val in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = val
    unknown = [k for k in out if not _KEY.fullmatch(k)]
    if unknown:
        raise CheckpointError(f"not an official ARPG state dict: unrecognised keys {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    return out


def infer_official_config(state: dict[str, torch.Tensor], block_size: int = 256) -> dict:
    """`ModelArgs` values implied by a state dict (released files carry no config). The head
    count is not in the tensors: it comes from the official size with the same (dim, n_layer)."""
    try:
        rows, dim = state["embeddings.weight"].shape
        vocab = state["head.weight"].shape[0]
        hidden = state["layers.self_dec.0.ffn.w1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not an official ARPG state dict: {e.args[0]} is missing") from None
    n_self = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("layers.self_dec."))
    n_layer = 2 * n_self
    if (dim, n_layer) not in HEADS_BY_SHAPE:
        raise CheckpointError(
            f"ARPG weights with dim {dim} and {n_layer} layers are not an official size "
            f"({_known_sizes()}); "
            f"the head count is not stored in the tensors: pass official_config=dict(dim=..., n_layer=..., n_head=...)")
    if hidden != llama_hidden_dim(dim, 256):
        raise CheckpointError(f"FFN width {hidden} is not the official one for dim {dim}: pass official_config "
                              f"with its multiple_of / ffn_dim_multiplier")
    return dict(dim=dim, n_layer=n_layer, n_head=HEADS_BY_SHAPE[(dim, n_layer)], vocab_size=vocab,
                num_classes=rows - vocab - 3, block_size=block_size)


def load_official_arpg(weights: Any, official_config: dict | argparse.Namespace | None = None,
                       use_ema: bool = False) -> ARPG:
    """Official ARPG weights -> our ARPG in eval mode.

    `weights`: a `.pt/.pth/.bin/.safetensors` path or an already loaded object: a bare state dict
    or a dict holding it under 'model' / 'module' / 'state_dict' (or 'ema' with `use_ema`).
    The config is `official_config` (ModelArgs fields or the training Namespace), else the
    checkpoint's own 'args', else inferred from the tensors for the official sizes.
    """
    obj = weights if isinstance(weights, dict) else load_weights(weights)
    args = obj.get("args") if isinstance(obj, dict) else None
    if use_ema:
        if not (isinstance(obj, dict) and isinstance(obj.get("ema"), dict)):
            raise CheckpointError("use_ema=True, but the checkpoint has no 'ema' state dict")
        obj = obj["ema"]
    state = convert_arpg_state_dict(unwrap_state_dict(obj))
    if official_config is None:
        official_config = args if isinstance(args, argparse.Namespace) else infer_official_config(state)
    model = ARPG(arpg_config_from_official(official_config))
    load_state_dict_strict(model, state, "official ARPG checkpoint")
    return model.eval()
