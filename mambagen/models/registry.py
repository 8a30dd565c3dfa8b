"""Named sizes for every family: `create_model("aim-l")` is the front door.

A family is (config class, model class). A named size is a family plus the
config values that define it; `create_model(name, **overrides)` builds it, and
`build_model(family, config_dict)` rebuilds a saved model from its config.json.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..io import dataclass_from_dict

from .aim import AiM, AiMConfig
from .arpg import ARPG, ARPGConfig
from .arpg import SIZES as ARPG_SIZES
from .gpt import GPT, GPTConfig
from .gpt import SIZES as GPT_SIZES
from .mvar import MVAR, MVARConfig
from .var import VAR, VARConfig

FAMILIES: dict[str, tuple[type, type]] = {
    "aim": (AiMConfig, AiM),
    "var": (VARConfig, VAR),
    "mvar": (MVARConfig, MVAR),
    "gpt": (GPTConfig, GPT),
    "arpg": (ARPGConfig, ARPG),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    config: dict
    description: str = ""
    official_params: int | None = None   # parameter count of the official implementation


REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, family: str, description: str = "", official_params: int | None = None, **config) -> None:
    if name in REGISTRY:
        raise ValueError(f"model name {name!r} registered twice")
    REGISTRY[name] = ModelSpec(name, family, config, description, official_params)


def list_models(family: str | None = None) -> list[str]:
    return [n for n, s in REGISTRY.items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_config(family: str, values: dict):
    if family not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return dataclass_from_dict(FAMILIES[family][0], values)


def build_model(family: str, config: dict) -> nn.Module:
    return FAMILIES[family][1](make_config(family, config))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered size with fresh weights, e.g. create_model("aim-b", num_classes=10)."""
    spec = get_spec(name)
    return build_model(spec.family, {**spec.config, **overrides})


def count_params(model: nn.Module) -> int:
    """Each parameter tensor once (tied weights once), buffers excluded."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- AiM
# Paper Table 1; official counts from instantiating hp-l33/AiM (shared/spec/checkpoints.md).
register("aim-b", "aim", "AiM-B: 24 layers, 768 wide, per-layer adaLN", 147_622_080,
         d_model=768, n_layer=24, adaln="layer")
register("aim-l", "aim", "AiM-L: 48 layers, 1024 wide, adaLN-group (4)", 349_760_000,
         d_model=1024, n_layer=48, adaln="group", adaln_groups=4)
register("aim-xl", "aim", "AiM-XL: 48 layers, 1536 wide, adaLN-group (4)", 763_291_392,
         d_model=1536, n_layer=48, adaln="group", adaln_groups=4)
register("aim-1b", "aim", "AiM-1B: 48 layers, 2048 wide, adaLN-group (4)", 1_335_944_192,
         d_model=2048, n_layer=48, adaln="group", adaln_groups=4)
# Small sizes for tests and the CPU demo (own design, no official counterpart).
register("aim-tiny", "aim", "tests/CPU demo: 4 layers, 64 wide", None,
         d_model=64, n_layer=4, vocab_size=256, num_classes=10, num_tokens=16, d_state=16, headdim=16,
         chunk_size=16, adaln="group", adaln_groups=2)
register("aim-small", "aim", "demo scale: 12 layers, 256 wide", None,
         d_model=256, n_layer=12, vocab_size=1024, num_classes=9, num_tokens=64, d_state=64, headdim=32,
         chunk_size=64, adaln="group", adaln_groups=4, token_dropout=0.1, mixer_dropout=0.1)

# ---------------------------------------------------------------------------- VAR and M-VAR
# The official builders tie width = 64 * depth, heads = depth, drop-path 0.1 * depth / 24.
def _depth(d: int) -> dict:
    return dict(depth=d, embed_dim=64 * d, num_heads=d, drop_path_rate=0.1 * d / 24)


for _d, _n in ((16, 310_283_520), (20, 600_917_136), (24, 1_033_399_360), (30, 2_010_020_356)):
    register(f"var-d{_d}", "var", f"VAR-d{_d} (256 px)", _n, **_depth(_d))
register("var-d36", "var", "VAR-d36 (512 px, shared adaLN)", 2_353_893_904, **_depth(36), shared_aln=True,
         patch_nums=(1, 2, 3, 4, 6, 9, 13, 18, 24, 32))
# attn_l2_norm as the official checkpoints use it (README: off for d16/d20)
for _d, _l2, _n in ((12, True, 198_435_568), (16, False, 464_157_184), (20, False, 900_528_736),
                    (24, True, 1_550_067_136), (30, True, 3_017_065_756), (32, True, 3_658_707_968)):
    register(f"mvar-d{_d}", "mvar", f"M-VAR-d{_d} (256 px)" + (" - the paper says 3.0B" if _d == 32 else ""), _n,
             **_depth(_d), attn_l2_norm=_l2)
register("var-tiny", "var", "tests: 2 blocks, 32 wide", None, depth=2, embed_dim=32, num_heads=2, vocab_size=256,
         Cvae=8, num_classes=10, patch_nums=(1, 2, 3, 4))
register("mvar-tiny", "mvar", "tests: 2 blocks, 32 wide", None, depth=2, embed_dim=32, num_heads=2, vocab_size=256,
         Cvae=8, num_classes=10, patch_nums=(1, 2, 3, 4), d_state=16, headdim=16, chunk_size=16)

# ---------------------------------------------------------------------------- LlamaGen GPT (the raster baseline)
for _name, (_kw, _n) in GPT_SIZES.items():
    register(_name, "gpt", f"LlamaGen GPT-{_name.split('-')[1].upper()}" if _n else "tests: 2 layers, 64 wide",
             _n, **_kw)

# ---------------------------------------------------------------------------- ARPG (random order, parallel decoding)
for _name, (_kw, _n) in ARPG_SIZES.items():
    register(_name, "arpg", f"ARPG-{_name.split('-')[1].upper()}" if _n else "tests: 4 layers, 64 wide", _n, **_kw)

# ---------------------------------------------------------------------------- the demo-scale study (equal size)
# ~6.4M parameters each, for the 64 px emoji demo (8x8 tokens, 1024 codes; M-VAR: scales 1,2,3,4,6,8 of msvq-demo).
# Dropout 0.1 in each (GPT/ARPG: LlamaGen's defaults; AiM: tokens + mixer outputs, set above; M-VAR: drop_rate).
_DEMO = dict(vocab_size=1024, num_classes=9)
register("gpt-small", "gpt", "demo study: 7 layers, 256 wide", None, dim=256, n_layer=7, n_head=4, num_tokens=64, **_DEMO)
register("arpg-small", "arpg", "demo study: 4 + 4 layers, 256 wide", None, dim=256, n_layer=8, n_head=4, multiple_of=64,
         num_tokens=64, **_DEMO)
register("mvar-small", "mvar", "demo study: 6 blocks, 192 wide", None, depth=6, embed_dim=192, num_heads=3, Cvae=32,
         patch_nums=(1, 2, 3, 4, 6, 8), d_state=64, headdim=64, chunk_size=64, drop_rate=0.1, **_DEMO)
