"""Loaders for official checkpoints: `load_official(family, weights, official_config)`.

`weights` is a path (.pt/.pth/.bin/.safetensors, or an HF directory with config.json
and model.safetensors) or an already loaded state dict. Files are read without
unpickling code (see `mambagen.io`). Each family's key mapping is a pure function
in its own module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..io import CheckpointError, load_state_dict_strict, load_weights, read_json, unwrap_state_dict


def _read_state(weights: Any) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, config.json of an HF directory or None)."""
    if isinstance(weights, dict):
        return unwrap_state_dict(weights), None
    path = Path(weights)
    if path.is_dir():
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()]
        if not files:
            raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in this directory")
        config = read_json(path / "config.json") if (path / "config.json").exists() else None
        return unwrap_state_dict(load_weights(files[0])), config
    return unwrap_state_dict(load_weights(path)), None


def load_official_aim(weights: Any, official_config: dict | None = None, vq_config: dict | None = None,
                      vq_arch_overrides: dict | None = None):
    """Official AiM weights -> (AiM, VQModel or None).

    Accepts the HF directory (config.json + model.safetensors with `mamba.`/`vqvae.`
    keys), a Trainer `pytorch_model.bin`, or a bare `MambaLMHeadModel` state dict
    with its `MambaConfig` dict. The tokenizer (official VQ-f16 unless `vq_config`, in
    LlamaGen `ModelArgs` fields, says otherwise) is returned when the file holds one.
    """
    from ..models.aim import AiM
    from .aim import aim_config_from_official, convert_aim_state_dict, split_aim_release

    state, dir_config = _read_state(weights)
    official_config = official_config or dir_config
    if official_config is None:
        raise CheckpointError("official AiM weights need their MambaConfig (config.json of the HF repo, "
                              "or pass official_config=...)")
    gen_state, vq_state = split_aim_release(state)
    model = AiM(aim_config_from_official(official_config))
    load_state_dict_strict(model, convert_aim_state_dict(gen_state), "official AiM checkpoint")
    tokenizer = None
    if vq_state:
        from .llamagen_vq import load_official_llamagen_vq
        tokenizer = load_official_llamagen_vq(vq_state, vq_config, vq_arch_overrides)
    return model.eval(), tokenizer


def official_tokenizer_kinds() -> dict:
    """`mambagen convert` names of the official tokenizer files -> their tokenizer kinds."""
    from ..tokenizers import KINDS
    return {kind.official: kind for kind in KINDS.values()}


def load_official(family: str, weights: Any, official_config: dict | None = None, **kwargs):
    """Front door for official checkpoints: a family's record converts its weights (`Family.convert`),
    a tokenizer kind its tokenizer. Families: aim, gpt, arpg, var, mvar (kwargs: vocab_size, Cvae of the
    VQVAE, or tokenizer=the converted VQVAE); tokenizers: llamagen_vq (or vq), var_vqvae."""
    from ..models.registry import FAMILIES
    kinds = {**official_tokenizer_kinds(), "vq": official_tokenizer_kinds()["llamagen_vq"]}
    if family in kinds:
        return kinds[family].convert(weights, official_config, **kwargs)
    if family not in FAMILIES:
        raise KeyError(f"no official loader for family {family!r} (known: {', '.join([*FAMILIES, *kinds])})")
    return FAMILIES[family].convert(weights, official_config, **kwargs)[0]


__all__ = ["load_official", "load_official_aim"]
