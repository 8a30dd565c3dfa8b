"""Official VAR (FoundationVision/VAR) and M-VAR (OliverRensu/MVAR) checkpoints -> ours.

Our modules use the official key names, so the state dict passes through as is; what the
conversion does is check it and build the config, whose vocabulary and code width come
from the VQVAE the official model is constructed with (`vae_local`).
"""
from __future__ import annotations

import torch

from ..io import CheckpointError

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
    from ..models.registry import get_family
    return get_family(family).config(**values, vocab_size=vocab_size, Cvae=Cvae, extra={"converted_from": family})


PATCH_NUMS_BY_LENGTH = {680: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 2240: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}


def infer_var_config(state: dict[str, torch.Tensor]) -> dict:
    """The official constructor arguments a released VAR/M-VAR state dict implies (the files carry no
    config): depth, width, heads (= depth, as the builders tie them), classes, adaLN sharing, l2-norm
    attention, and the scales (from the sequence length of the two released resolutions)."""
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    C = state["class_emb.weight"].shape[1]
    L = state["pos_1LC"].shape[1]
    if L not in PATCH_NUMS_BY_LENGTH:
        raise CheckpointError(f"cannot infer patch_nums for a sequence of {L} tokens; pass the official config")
    heads = state["blocks.0.attn.scale_mul_1H11"].shape[1] if "blocks.0.attn.scale_mul_1H11" in state else depth
    return dict(depth=depth, embed_dim=C, num_heads=heads, num_classes=state["class_emb.weight"].shape[0] - 1,
                shared_aln="shared_ada_lin.1.weight" in state,
                attn_l2_norm="blocks.0.attn.scale_mul_1H11" in state, patch_nums=list(PATCH_NUMS_BY_LENGTH[L]))


def convert_var_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys are ours; strip wrappers of training checkpoints (`module.`, `_orig_mod.`)."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_official_var(family: str, weights, official_config: dict | None = None, vocab_size: int = 4096,
                      Cvae: int = 32):
    """Official VAR/M-VAR weights (bare state dict file like var_d16.pth / d16.pth, an `ar-ckpt`
    training checkpoint, or a state dict) -> our model in eval mode. Without `official_config`
    it is inferred from the tensors (`infer_var_config`)."""
    from ..io import load_state_dict_strict, load_weights, unwrap_state_dict
    from ..models.registry import get_family

    if not isinstance(weights, dict):
        weights = load_weights(weights)
    if isinstance(weights, dict) and "trainer" in weights and isinstance(weights["trainer"], dict):
        weights = weights["trainer"].get("var_wo_ddp", weights)   # ar-ckpt-*.pth of the official trainers
    state = convert_var_state_dict(unwrap_state_dict(weights))
    if official_config is None:
        official_config = infer_var_config(state)
    cfg = var_config_from_official(family, official_config, vocab_size, Cvae)
    model = get_family(family).model(cfg)
    load_state_dict_strict(model, state, f"official {family.upper()} checkpoint")
    return model.eval()
