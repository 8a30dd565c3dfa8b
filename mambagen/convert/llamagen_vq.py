"""Load official LlamaGen VQ tokenizer weights (and AiM's tokenizer) into `VQModel`.

Our module tree reuses the official names, so conversion is mostly validation:
  - LlamaGen `vq_ds16_c2i.pt`: `torch.load(path)['model']`, keys as in `VQModel.state_dict()`;
  - AiM weights: the same keys under a `vqvae.` prefix next to the `mamba.` generator keys.
The `quantize.codebook_used` usage buffer is part of official files; it is added (zeros) when
absent and dropped when the config keeps no usage buffer.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from ..io import CheckpointError, load_state_dict_strict, load_weights, unwrap_state_dict
from ..tokenizers.vq import USAGE_BUFFER_LEN, VQConfig, VQModel

USAGE_KEY = "quantize.codebook_used"

# Official LlamaGen `ModelArgs` fields: same names as ours.
_LLAMAGEN_FIELDS = {
    "codebook_size", "codebook_embed_dim", "codebook_l2_norm", "codebook_show_usage", "commit_loss_beta",
    "entropy_loss_ratio", "encoder_ch_mult", "decoder_ch_mult", "z_channels", "dropout_p",
}
# AiM's stage-1 `VQConfig` uses other names for the same things.
_AIM_RENAMES = {"n_embed": "codebook_size", "embed_dim": "codebook_embed_dim", "num_res_blocks": "num_res_blocks"}
# Fields of AiM's `VQConfig` that its VQModel never reads (its width is always 128, 3 channels in/out).
_AIM_UNUSED = {"ch", "attn_resolutions", "in_channels", "out_channels"}


def vq_config_from_official(official_config: Optional[dict] = None, arch_overrides: Optional[dict] = None) -> VQConfig:
    """Our `VQConfig` from an official config dict (LlamaGen `ModelArgs` or AiM `VQConfig` names).

    `arch_overrides` sets fields the official `VQModel` does not expose (`ch`, `num_res_blocks`)
    or any other `VQConfig` field; it wins over `official_config`.
    """
    fields: dict[str, Any] = {}
    unknown = []
    for key, value in (official_config or {}).items():
        if key in _LLAMAGEN_FIELDS:
            fields[key] = value
        elif key in _AIM_RENAMES:
            fields[_AIM_RENAMES[key]] = value
        elif key == "ch_mult":  # AiM: one list for encoder and decoder
            fields["encoder_ch_mult"] = fields["decoder_ch_mult"] = value
        elif key in _AIM_UNUSED:
            continue
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown official VQ config key(s) {sorted(unknown)}; expected LlamaGen ModelArgs "
                         f"fields {sorted(_LLAMAGEN_FIELDS)} or AiM VQConfig fields")
    fields.update(arch_overrides or {})
    return VQConfig.from_dict(fields)


def convert_llamagen_vq_state_dict(state: dict[str, torch.Tensor], config: Optional[VQConfig] = None) -> dict[str, torch.Tensor]:
    """Official VQ state dict -> ours (a new dict; tensors are shared, not copied).

    Strips AiM's `vqvae.` prefix (dropping its generator keys) and a DDP `module.` prefix, and
    makes the usage buffer match `config.codebook_show_usage` (default: keep/add it). With
    `config`, keys and shapes are checked against that architecture and any problem raises a
    `CheckpointError` naming the keys.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("expected a state dict (a dict of tensors)")
    if any(k.startswith("vqvae.") for k in state):
        state = {k[len("vqvae."):]: v for k, v in state.items() if k.startswith("vqvae.")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    state = dict(state)

    keep_usage = config is None or config.codebook_show_usage
    if keep_usage and USAGE_KEY not in state:
        state[USAGE_KEY] = torch.zeros(USAGE_BUFFER_LEN)
    if not keep_usage:
        state.pop(USAGE_KEY, None)

    if config is not None:
        # compare shapes only: model and tensors on the meta device cost no memory or copying
        with torch.device("meta"):
            reference = VQModel(config)
        load_state_dict_strict(reference, {k: v.to("meta") for k, v in state.items()}, what="LlamaGen VQ checkpoint")
    return state


def load_official_llamagen_vq(weights: str | os.PathLike | dict, official_config: Optional[dict] = None,
                              arch_overrides: Optional[dict] = None) -> VQModel:
    """A `VQModel` (eval mode, float32, CPU) with official weights.

    `weights`: a path (`.safetensors`, or `.pt/.pth/.bin` loaded without running pickled code;
    containers with a `model`/`module`/`state_dict` entry are unwrapped) or a state dict.
    `official_config` defaults to the official VQ-16 (`ModelArgs()`); `arch_overrides` as in
    `vq_config_from_official`.
    """
    if isinstance(weights, (str, os.PathLike)):
        state = unwrap_state_dict(load_weights(weights))
    else:
        state = unwrap_state_dict(weights)
    config = vq_config_from_official(official_config, arch_overrides)
    state = convert_llamagen_vq_state_dict(state, config)
    model = VQModel(config)
    load_state_dict_strict(model, state, what="LlamaGen VQ checkpoint")
    return model.eval()
