"""Official LlamaGen GPT c2i (FoundationVision/LlamaGen) checkpoints -> our GPT. Pure functions.

Our module tree keeps the official names, so conversion is cleaning and validation:
wrapper prefixes (`module.`, `_orig_mod.`) go, sampling-time buffers (`kv_cache.*`,
`freqs_cis`) go, and anything else unknown is an error that names it. Files:
`c2i_{B,L,XL}_{256,384}.pt` hold `{'model': state_dict, ...}`; the FSDP-trained
`c2i_XXL_384.pt` / `c2i_3B_384.pt` are the bare state dict.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..io import CheckpointError, load_state_dict_strict, load_weights, unwrap_state_dict
from ..models.gpt import GPT, GPTConfig

# official ModelArgs field -> ours (same meaning)
_RENAMES = {
    "dim": "dim", "n_layer": "n_layer", "n_head": "n_head", "n_kv_head": "n_kv_head", "multiple_of": "multiple_of",
    "ffn_dim_multiplier": "ffn_dim_multiplier", "rope_base": "rope_base", "norm_eps": "norm_eps",
    "initializer_range": "init_std", "token_dropout_p": "token_dropout", "attn_dropout_p": "attn_dropout",
    "resid_dropout_p": "resid_dropout", "ffn_dropout_p": "ffn_dropout", "num_classes": "num_classes",
    "class_dropout_prob": "class_dropout", "vocab_size": "vocab_size", "cls_token_num": "cls_token_num",
    "block_size": "num_tokens",
}
# fields that do not change a c2i model's weights or outputs: text conditioning, cache sizes, and
# stochastic depth (training only; not implemented here)
_IGNORED = {"caption_dim", "max_batch_size", "max_seq_len", "drop_path_rate", "model_type"}
# the ModelArgs defaults where they differ from GPTConfig's
_OFFICIAL_DEFAULTS = {"dim": 4096, "n_layer": 32, "n_head": 32}

# (dim, n_layer) -> n_head of the official c2i sizes (GPT_models); heads cannot be read off the shapes
OFFICIAL_HEADS = {(768, 12): 12, (1024, 24): 16, (1280, 36): 20, (1536, 48): 24, (2560, 48): 40,
                  (2048, 22): 32, (3200, 24): 32, (4096, 32): 32}

_KEY_PATTERNS = [re.compile(p) for p in (
    r"cls_embedding\.embedding_table\.weight",
    r"tok_embeddings\.weight",
    r"layers\.\d+\.attention\.(wqkv|wo)\.weight",
    r"layers\.\d+\.feed_forward\.w[123]\.weight",
    r"layers\.\d+\.(attention_norm|ffn_norm)\.weight",
    r"norm\.weight",
    r"output\.weight",
)]
_DROPPED = re.compile(r"(layers\.\d+\.attention\.kv_cache\.[kv]_cache|freqs_cis|causal_mask)")
_PREFIXES = ("module.", "_orig_mod.")


def gpt_config_from_official(official: dict) -> GPTConfig:
    """LlamaGen `ModelArgs` fields -> GPTConfig; missing fields take the ModelArgs defaults."""
    model_type = official.get("model_type", "c2i")
    if model_type != "c2i":
        raise CheckpointError(f"LlamaGen model_type {model_type!r} is not supported: only class-conditional "
                              "'c2i' models (t2i needs a caption embedder)")
    unknown = sorted(set(official) - set(_RENAMES) - _IGNORED)
    if unknown:
        raise CheckpointError(f"unknown LlamaGen ModelArgs field(s) {unknown}; known: {sorted(set(_RENAMES) | _IGNORED)}")
    values = {ours: official[theirs] for theirs, ours in _RENAMES.items() if theirs in official}
    for k, v in _OFFICIAL_DEFAULTS.items():
        values.setdefault(k, v)
    values.setdefault("class_dropout", 0.1)
    # the official LabelEmbedder has the null row only when labels are dropped during training
    values["null_class"] = values["class_dropout"] > 0
    extra = {"converted_from": "FoundationVision/LlamaGen"}
    if official.get("drop_path_rate", 0.0):
        extra["official_drop_path_rate"] = official["drop_path_rate"]  # not implemented: training-only
    return GPTConfig(cls_rope_zero=True, extra=extra, **values)


def convert_gpt_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official state dict -> ours (same names): strip wrapper prefixes, drop sampling-time buffers."""
    out, unknown = {}, []
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))):]
        if _DROPPED.fullmatch(key):
            continue
        if any(p.fullmatch(key) for p in _KEY_PATTERNS):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        hint = " (a t2i checkpoint: only c2i is supported)" if any(k.startswith("cls_embedding.cap_proj") for k in unknown) else ""
        raise CheckpointError(f"not an official LlamaGen GPT c2i state dict{hint}: unrecognised keys {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    return out


def infer_official_config(state: dict[str, torch.Tensor], block_size: int = 256) -> dict:
    """ModelArgs for a c2i state dict without its config: sizes from the shapes, heads from the official sizes."""
    if "tok_embeddings.weight" not in state or "cls_embedding.embedding_table.weight" not in state:
        raise CheckpointError("cannot infer the GPT config: tok_embeddings.weight or cls_embedding.embedding_table.weight missing")
    vocab, dim = state["tok_embeddings.weight"].shape
    n_layer = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    n_head = OFFICIAL_HEADS.get((dim, n_layer))
    if n_head is None:
        raise CheckpointError(f"GPT with dim {dim} and {n_layer} layers is not an official LlamaGen size, and the "
                              "number of heads cannot be read off the weights: pass official_config=ModelArgs fields")
    head_dim = dim // n_head
    qkv_rows = state["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (qkv_rows // head_dim - n_head) // 2
    hidden = state["layers.0.feed_forward.w1.weight"].shape[0]
    config = dict(dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=None if n_kv_head == n_head else n_kv_head,
                  vocab_size=vocab, block_size=block_size,
                  # 1001 rows: 1000 classes + the null row that class_dropout_prob > 0 adds (all released files)
                  num_classes=state["cls_embedding.embedding_table.weight"].shape[0] - 1, class_dropout_prob=0.1)
    if gpt_config_from_official(config).ffn_hidden != hidden:
        raise CheckpointError(f"FFN width {hidden} does not follow the default rule (multiple_of=256): pass "
                              "official_config with multiple_of / ffn_dim_multiplier")
    return config


def _block_size_from_name(path: str | os.PathLike) -> int | None:
    """Official file names end in the image size: c2i_L_384.pt -> (384 / 16)^2 = 576 tokens."""
    m = re.search(r"_(\d+)\.(pt|pth|bin|safetensors)$", Path(path).name)
    return (int(m.group(1)) // 16) ** 2 if m and int(m.group(1)) in (256, 384, 512) else None


def load_official_gpt(weights: Any, official_config: dict | None = None, block_size: int | None = None) -> GPT:
    """Official LlamaGen GPT c2i weights -> GPT (eval mode).

    `weights`: a path to `c2i_*.pt` (`{'model': ...}` containers or a bare FSDP state dict) or a
    loaded state dict. `official_config`: `ModelArgs` fields; without it the architecture is read
    off the shapes (heads from the official sizes) and `block_size` (tokens per image) is taken
    from the argument, the official file name (`_256`/`_384`), else 256.
    """
    if isinstance(weights, dict):
        state, name_hint = unwrap_state_dict(weights), None
    else:
        state, name_hint = unwrap_state_dict(load_weights(weights)), _block_size_from_name(weights)
    state = convert_gpt_state_dict(state)
    if official_config is None:
        official_config = infer_official_config(state, block_size or name_hint or 256)
    elif block_size is not None:
        official_config = {**official_config, "block_size": block_size}
    model = GPT(gpt_config_from_official(official_config))
    load_state_dict_strict(model, state, "official LlamaGen GPT checkpoint")
    return model.eval()
