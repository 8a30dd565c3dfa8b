"""The family records, collected: `create_model("aim-l")` is the front door.

Each model file declares its family's record (`family.Family`: config and model classes, named sizes,
tokenizer fit, samplers and fast paths, edits, training inputs, converter, parity kinds); this file
registers each with one line and answers every lookup shared code needs.
"""
from __future__ import annotations

import torch.nn as nn

from ..family import Family, Size
from ..io import dataclass_from_dict
from . import aim, arpg, gpt, mvar, var

FAMILIES: dict[str, Family] = {}
REGISTRY: dict[str, tuple[Family, Size]] = {}      # named size -> (family, size)


def register(family: Family) -> None:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    for name, size in family.sizes.items():
        if name in REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        REGISTRY[name] = (family, size)
    FAMILIES[family.name] = family


register(aim.FAMILY)
register(gpt.FAMILY)
register(arpg.FAMILY)
register(var.FAMILY)
register(mvar.FAMILY)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> Family:
    """The record of a model's family (also through wrappers that subclass it, e.g. FSDP's)."""
    for family in FAMILIES.values():
        if isinstance(model, family.model):
            return family
    raise TypeError(f"not a registered model family: {type(model).__qualname__} (families: {', '.join(FAMILIES)})")


def family_for_fixture(kind: str) -> Family | None:
    return next((f for f in FAMILIES.values() if kind in f.parity), None)


def list_models(family: str | None = None) -> list[str]:
    return [n for n, (f, _) in REGISTRY.items() if family is None or f.name == family]


def _lookup(name: str) -> tuple[Family, Size]:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_spec(name: str) -> Size:
    """A named size: its config values, description and official parameter count."""
    return _lookup(name)[1]


def family_of_size(name: str) -> Family:
    return _lookup(name)[0]


def make_config(family: str, values: dict):
    return dataclass_from_dict(get_family(family).config, values)


def build_model(family: str, config: dict) -> nn.Module:
    return get_family(family).model(make_config(family, config))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered size with fresh weights, e.g. create_model("aim-b", num_classes=10)."""
    family, size = _lookup(name)
    return build_model(family.name, {**size.config, **overrides})


def with_config(model: nn.Module, **changes) -> nn.Module:
    """The same weights in a model built with some config values changed (e.g. ARPG on a larger grid:
    its positions enter only through the 2D RoPE table, a function of the config)."""
    family = family_of(model)
    p = next(model.parameters())
    other = build_model(family.name, {**model.config.to_dict(), **changes}).to(device=p.device, dtype=p.dtype)
    other.load_state_dict(model.state_dict())
    return other.eval()


def count_params(model: nn.Module) -> int:
    """Each parameter tensor once (tied weights once), buffers excluded."""
    return sum(p.numel() for p in model.parameters())
