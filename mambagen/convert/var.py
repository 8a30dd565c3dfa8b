"""Official VAR (FoundationVision/VAR) and M-VAR (OliverRensu/MVAR) checkpoints -> ours.

Our modules use the official key names, so the state dict passes through as is; what the
conversion does is check it and build the config, whose vocabulary and code width come
from the VQVAE the official model is constructed with (`vae_local`).
"""
from __future__ import annotations

import torch

from ..io import CheckpointError
from ..models.mvar import MVARConfig
from ..models.var import VARConfig

# official constructor arguments that only choose kernels
_KERNEL_ONLY = {"flash_if_available", "fused_if_available", "vae_local"}


def var_config_from_official(family: str, official: dict, vocab_size: int = 4096, Cvae: int = 32):
    """`VAR(...)`/`MVAR(...)` keyword arguments (+ the VAE's vocabulary and code width) -> our config."""
    known = {"num_classes", "depth", "embed_dim", "num_heads", "mlp_ratio", "drop_rate", "attn_drop_rate",
             "drop_path_rate", "norm_eps", "shared_aln", "cond_drop_rate", "attn_l2_norm", "patch_nums"}
    unknown = sorted(set(official) - known - _KERNEL_ONLY)
    if unknown:
        raise CheckpointError(f"official {family.upper()} config has arguments this loader does not know: {unknown}")
    values = {k: v for k, v in official.items() if k in known and k != "cond_drop_rate"}
    values["class_dropout"] = official.get("cond_drop_rate", 0.1)
    values.setdefault("depth", 16)
    if "patch_nums" in values:
        values["patch_nums"] = tuple(values["patch_nums"])
    cls = MVARConfig if family == "mvar" else VARConfig
    return cls(**values, vocab_size=vocab_size, Cvae=Cvae, extra={"converted_from": family})


def convert_var_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys are ours; strip wrappers of training checkpoints (`module.`, `_orig_mod.`)."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_official_var(family: str, weights, official_config: dict, vocab_size: int = 4096, Cvae: int = 32):
    """Official VAR/M-VAR weights (bare state dict file like var_d16.pth / d16.pth, an `ar-ckpt`
    training checkpoint, or a state dict) -> our model in eval mode."""
    from ..io import load_state_dict_strict, load_weights, unwrap_state_dict
    from ..models.registry import FAMILIES

    if not isinstance(weights, dict):
        weights = load_weights(weights)
    if isinstance(weights, dict) and "trainer" in weights and isinstance(weights["trainer"], dict):
        weights = weights["trainer"].get("var_wo_ddp", weights)   # ar-ckpt-*.pth of the official trainers
    state = convert_var_state_dict(unwrap_state_dict(weights))
    cfg = var_config_from_official(family, official_config, vocab_size, Cvae)
    model = FAMILIES[family][1](cfg)
    load_state_dict_strict(model, state, f"official {family.upper()} checkpoint")
    return model.eval()
