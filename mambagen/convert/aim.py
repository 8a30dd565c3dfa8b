"""Official AiM (hp-l33/AiM) checkpoints -> our AiM. Pure functions.

Official layout: `MambaLMHeadModel` keys (`backbone.*`, `lm_head.weight`), stored in
released files under `mamba.` next to the tokenizer under `vqvae.`; safetensors keeps
one name of the tied embedding, so `lm_head.weight` is usually absent.
"""
from __future__ import annotations

import re

import torch

from ..io import CheckpointError
from ..models.aim import AiMConfig

MAMBA2_DEFAULTS = dict(d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, chunk_size=256)
# other official Mamba2 arguments: those that change the computation go to AiMConfig.mixer_options,
# those that only matter for init or for the CUDA/TP implementation are dropped
MAMBA2_OPTIONS = {"D_has_hdim", "rmsnorm", "norm_before_gate", "dt_limit", "bias", "conv_bias",
                  "A_init_range", "dt_min", "dt_max", "dt_init_floor"}
MAMBA2_IGNORED = {"conv_init", "use_mem_eff_path", "layer_idx", "process_group", "sequence_parallel",
                  "device", "dtype"}

# official key <-> our key; {i} a layer index, {wb} weight or bias, {rest} anything
KEY_MAP = [
    ("backbone.embeddings.word_embeddings.weight", "tok_emb.weight"),
    ("backbone.embeddings.position_embeddings.weight", "pos_emb.weight"),
    ("backbone.cls_embed.embedding_table.weight", "class_emb.weight"),
    ("backbone.adaln_group.1.{wb}", "ada_group.proj.{wb}"),
    ("backbone.layers.{i}.norm.weight", "blocks.{i}.norm.weight"),
    ("backbone.layers.{i}.mixer.{rest}", "blocks.{i}.mixer.{rest}"),
    ("backbone.layers.{i}.adaLN_modulation.1.{wb}", "blocks.{i}.ada_lin.{wb}"),
    ("backbone.layers.{i}.scale_shift_table", "blocks.{i}.ada_table"),
    ("backbone.norm_f.weight", "norm_f.weight"),
    ("backbone.final_layer.norm_final.weight", "final_norm.weight"),
    ("backbone.final_layer.adaLN_modulation.1.{wb}", "final_ada_lin.{wb}"),
    ("lm_head.weight", "head.weight"),
]
_FIELDS = {"i": r"\d+", "wb": "weight|bias", "rest": ".+"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for k, p in enumerate(parts)))


def rename_keys(state: dict, key_map, reverse: bool = False) -> tuple[dict, list[str]]:
    """Rename every key by the first matching template pair; returns (renamed, unmatched keys)."""
    pairs = [(_pattern(b), a) if reverse else (_pattern(a), b) for a, b in key_map]
    out, unmatched = {}, []
    for key, value in state.items():
        for pattern, target in pairs:
            m = pattern.fullmatch(key)
            if m:
                out[target.format(**m.groupdict())] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def aim_config_from_official(official: dict) -> AiMConfig:
    """`MambaConfig` fields (config.json of the HF repos) -> AiMConfig, with official behaviour."""
    unsupported = []
    if official.get("d_intermediate", 0):
        unsupported.append("d_intermediate != 0 (gated MLP blocks)")
    if official.get("attn_layer_idx"):
        unsupported.append("attn_layer_idx (attention layers)")
    if not official.get("rms_norm", True):
        unsupported.append("rms_norm=False (LayerNorm)")
    if not official.get("tie_embeddings", True):
        unsupported.append("tie_embeddings=False")
    ssm = dict(official.get("ssm_cfg") or {})
    if ssm.pop("layer", "Mamba2") != "Mamba2":
        unsupported.append("ssm_cfg.layer other than Mamba2")
    d_ssm = ssm.pop("d_ssm", None)
    if d_ssm is not None and d_ssm != ssm.get("expand", 2) * official.get("d_model", 1024):
        unsupported.append("ssm_cfg.d_ssm smaller than d_inner (partial SSM + MLP)")
    extra = sorted(set(ssm) - set(MAMBA2_DEFAULTS) - MAMBA2_OPTIONS - MAMBA2_IGNORED)
    if extra:
        unsupported.append(f"ssm_cfg keys {extra}")
    if unsupported:
        raise CheckpointError("official AiM config uses features AiM never shipped with: " + ", ".join(unsupported))
    mamba = {**MAMBA2_DEFAULTS, **{k: v for k, v in ssm.items() if k in MAMBA2_DEFAULTS}}
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ssm.items() if k in MAMBA2_OPTIONS}
    groups = official.get("num_groups", official.get("n_groups", 4))
    group_mode = official.get("adaln_group", official.get("adaln_single", True))
    return AiMConfig(
        d_model=official.get("d_model", 1024), n_layer=official.get("n_layer", 48),
        vocab_size=official.get("vocab_size", 16384), num_classes=official.get("num_classes", 1000),
        num_tokens=official.get("num_tokens", official.get("num_img_tokens", 256)),
        adaln="group" if group_mode else "layer", adaln_groups=groups if group_mode else 4,
        token_dropout=official.get("token_drop", 0.0), mixer_dropout=official.get("mixer_drop", 0.0),
        norm_f=True, sample_position_shift=1, extra={"converted_from": "hp-l33/AiM"},
        mixer_options=options, **mamba,
    )


def split_aim_release(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Released AiM weights hold the generator under `mamba.` and the tokenizer under `vqvae.`."""
    if not any(k.startswith("mamba.") for k in state):
        return state, {}
    gen = {k[len("mamba."):]: v for k, v in state.items() if k.startswith("mamba.")}
    vq = {k[len("vqvae."):]: v for k, v in state.items() if k.startswith("vqvae.")}
    return gen, vq


def convert_aim_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys to ours; re-tie the head when only the embedding was stored."""
    out, unknown = rename_keys(state, KEY_MAP)
    if unknown:
        raise CheckpointError(f"not an official AiM state dict: unrecognised keys {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    if "tok_emb.weight" not in out:
        raise CheckpointError("official AiM state dict lacks backbone.embeddings.word_embeddings.weight")
    if "head.weight" in out and not torch.equal(out["head.weight"], out["tok_emb.weight"]):
        raise CheckpointError("lm_head.weight differs from the token embedding, but AiM ties them")
    out["head.weight"] = out["tok_emb.weight"]
    return out


def export_aim_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our AiM keys -> official `MambaLMHeadModel` keys (inverse of `convert_aim_state_dict`)."""
    out, unknown = rename_keys(state, KEY_MAP, reverse=True)
    if unknown:
        raise CheckpointError(f"cannot export keys {unknown[:8]} to the official AiM layout")
    return out
