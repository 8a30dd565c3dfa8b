"""Load official VAR VQVAE weights (`vae_ch160v4096z32.pth`, also M-VAR's) into `MSVQModel`.

The official file is a bare state dict whose keys are exactly `MSVQModel.state_dict()`'s, so
conversion is validation plus one buffer rule: the usage statistics `quantize.ema_vocab_hit_SV`
(scales, vocab) are replaced by zeros when their number of scales differs from the config's (the
official `VQVAE.load_state_dict` swaps in the model's fresh zero buffer) and added as zeros when
absent (the `var`/`mvar` fixtures repeat the quantizer without it). Any other missing, unexpected
or misshapen key is a `CheckpointError` naming it.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

from ..io import CheckpointError, load_state_dict_strict, load_weights, unwrap_state_dict
from ..tokenizers.msvq import MSVQConfig, MSVQModel, MultiScaleQuantizer

EMA_KEY = "ema_vocab_hit_SV"

# Defaults of the official `VQVAE(...)` constructor (models/vqvae.py): fill keys an official config omits.
OFFICIAL_VQVAE_DEFAULTS = dict(
    vocab_size=4096, z_channels=32, ch=128, dropout=0.0, beta=0.25, using_znorm=False, quant_conv_ks=3,
    quant_resi=0.5, share_quant_resi=4, default_qresi_counts=0, v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    test_mode=True,
)
# The released `vae_ch160v4096z32.pth` (VAR's build_vae_var arguments).
VAR_VQVAE_CH160_CONFIG = {**OFFICIAL_VQVAE_DEFAULTS, "ch": 160}
OFFICIAL_CH_MULT = (1, 1, 2, 2, 4)  # hard-coded in the official VQVAE (with 2 res blocks per level)

# Defaults of the official `VectorQuantizer2(...)` (models/quant.py), the quantizer alone: its keywords
# are VQVAE's but `Cvae` for z_channels (its positional `using_znorm` has no default there).
OFFICIAL_QUANTIZER_KEYS = {"vocab_size", "Cvae", "using_znorm", "beta", "default_qresi_counts", "v_patch_nums",
                           "quant_resi", "share_quant_resi"}

# official VQVAE keyword -> MSVQConfig field
_RENAMES = {"v_patch_nums": "patch_nums"}
_IGNORED = {"test_mode"}  # eval mode + frozen parameters: applied by the loaders, not architecture


def msvq_config_from_official(official: Optional[dict] = None, arch_overrides: Optional[dict] = None) -> MSVQConfig:
    """Our `MSVQConfig` from official `VQVAE(...)` (or `VectorQuantizer2(...)`) keyword arguments.

    `official=None` means the released vae_ch160v4096z32; keys it omits take the official
    constructor defaults. `arch_overrides` sets what the official class hard-codes (`ch_mult`,
    `num_res_blocks`) or any other field, and wins. `image_size` follows from the rest
    (patch_nums[-1] * 2**(len(ch_mult) - 1)) unless overridden.
    """
    given = VAR_VQVAE_CH160_CONFIG if official is None else dict(official)
    if "Cvae" in given:                      # VectorQuantizer2's keywords (a `var_quant` fixture)
        given["z_channels"] = given.pop("Cvae")
    if given.get("v_patch_nums") is None:    # VectorQuantizer2's default None: the VQVAE's scales
        given.pop("v_patch_nums", None)
    unknown = sorted(set(given) - set(OFFICIAL_VQVAE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown official VQVAE argument(s) {unknown}; expected {sorted(OFFICIAL_VQVAE_DEFAULTS)}")
    fields = {}
    for key, value in {**OFFICIAL_VQVAE_DEFAULTS, **given}.items():
        if key not in _IGNORED:
            fields[_RENAMES.get(key, key)] = value
    fields["ch_mult"] = OFFICIAL_CH_MULT
    fields.update(arch_overrides or {})
    fields["ch_mult"] = tuple(fields["ch_mult"])
    fields.setdefault("image_size", fields["patch_nums"][-1] * 2 ** (len(fields["ch_mult"]) - 1))
    return MSVQConfig.from_dict(fields)


def _as_state(state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("expected a state dict (a dict of tensors)")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _fit_usage_buffer(state: dict[str, torch.Tensor], key: str, config: MSVQConfig) -> None:
    """Zero usage statistics when absent or made for another number of scales (official behaviour)."""
    S, V = len(config.patch_nums), config.vocab_size
    ema = state.get(key)
    if ema is None or (ema.ndim == 2 and ema.shape[0] != S):
        state[key] = torch.zeros(S, V)


def convert_var_vqvae_state_dict(state: dict[str, torch.Tensor], config: Optional[MSVQConfig] = None) -> dict[str, torch.Tensor]:
    """Official VQVAE state dict -> ours (a new dict; tensors shared, not copied).

    Strips a DDP `module.` prefix; fixes the usage buffer (see the module doc). With `config`
    (default: the released vae_ch160v4096z32) keys and shapes are checked and any problem raises
    a `CheckpointError` listing the keys.
    """
    config = config or msvq_config_from_official()
    state = _as_state(state)
    _fit_usage_buffer(state, f"quantize.{EMA_KEY}", config)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        reference = MSVQModel(config)
    load_state_dict_strict(reference, {k: v.to("meta") for k, v in state.items()}, what="VAR VQVAE checkpoint")
    return state


def load_official_var_vqvae(weights: str | os.PathLike | dict, official_config: Optional[dict] = None,
                            arch_overrides: Optional[dict] = None) -> MSVQModel:
    """An `MSVQModel` (eval mode, float32, CPU; parameters frozen unless test_mode=False) with
    official VAR VQVAE weights.

    `weights`: a path (the bare state dict `vae_ch160v4096z32.pth` is loaded without running pickled
    code; `.safetensors` works too; `model`/`module`/`state_dict` containers are unwrapped) or a
    state dict. `official_config`: official `VQVAE(...)` keywords (default: the release).
    """
    raw = load_weights(weights) if isinstance(weights, (str, os.PathLike)) else weights
    config = msvq_config_from_official(official_config, arch_overrides)
    state = convert_var_vqvae_state_dict(unwrap_state_dict(raw), config)
    model = MSVQModel(config)
    load_state_dict_strict(model, state, what="VAR VQVAE checkpoint")
    return _apply_test_mode(model, official_config)


def load_official_var_quantizer(state: dict[str, torch.Tensor], official_config: Optional[dict] = None,
                                arch_overrides: Optional[dict] = None) -> MultiScaleQuantizer:
    """The quantizer alone (official `VQVAE.quantize`) from its own state dict.

    Keys are the quantizer's (`embedding.weight`, `quant_resi....`, `ema_vocab_hit_SV`); a shared
    `quantize.` prefix (as in a full VQVAE state dict) is stripped. The usage buffer may be absent.
    """
    config = msvq_config_from_official(official_config, arch_overrides)
    state = _as_state(state)
    if state and all(k.startswith("quantize.") for k in state):
        state = {k[len("quantize."):]: v for k, v in state.items()}
    _fit_usage_buffer(state, EMA_KEY, config)
    quantizer = MultiScaleQuantizer(config)
    load_state_dict_strict(quantizer, state, what="VAR VQVAE quantizer state")
    return _apply_test_mode(quantizer, official_config)


def _apply_test_mode(module: torch.nn.Module, official_config: Optional[dict]):
    """eval mode; with the official `test_mode=True` (default) also frozen parameters, as the official
    VQVAE constructor does (VAR trains its transformer against a frozen VQVAE)."""
    if (official_config or VAR_VQVAE_CH160_CONFIG).get("test_mode", True):
        module.requires_grad_(False)
    return module.eval()
