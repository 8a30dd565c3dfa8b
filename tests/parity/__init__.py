"""Golden parity: run our implementation on fixtures made by the official code.

A fixture is `<name>.safetensors` (`state.*` official weights, `in.*` inputs,
`out.*` expected outputs) plus `<name>.json` (`kind`, official `config`, meaning
of every output, tolerances). `RUNNERS` maps a fixture kind to a function
`run(fixture) -> {out_name: tensor}` that builds our model from the official
config through the official loader and recomputes every output; `check` then
compares each one. Kinds without a runner are reported as not implemented.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mambagen.io import load_safetensors

def runner_module(kind: str) -> str | None:
    """The module (under tests/parity) of the runner that answers fixtures of `kind`, or None."""
    from mambagen.models.registry import family_for_fixture
    from mambagen.tokenizers import KINDS
    family = family_for_fixture(kind)
    if family is not None:
        return family.name
    return next((k.official for k in KINDS.values() if kind in k.parity), None)


DEFAULT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


@dataclass
class Fixture:
    name: str
    kind: str
    meta: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)
    folder: Path

    def state(self, prefix: str = "state.") -> dict[str, torch.Tensor]:
        """Official state dict, floating tensors upcast to float32 (stored as float16)."""
        return {k[len(prefix):]: (v.float() if v.is_floating_point() else v)
                for k, v in self.tensors.items() if k.startswith(prefix)}

    def input(self, name: str) -> torch.Tensor:
        return self.tensors[f"in.{name}"]

    def list(self, prefix: str) -> list[torch.Tensor]:
        """`prefix.0`, `prefix.1`, ... in order (the fixtures' list convention)."""
        out, i = [], 0
        while f"{prefix}.{i}" in self.tensors:
            out.append(self.tensors[f"{prefix}.{i}"])
            i += 1
        return out

    @property
    def expected(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tensors.items() if k.startswith("out.")}

    def sibling(self, name: str) -> "Fixture":
        return load_fixture(self.folder / f"{name}.json")


@dataclass
class OutputCheck:
    name: str
    ok: bool
    detail: str


def golden_dir() -> Path:
    return Path(os.environ.get("MAMBAGEN_GOLDEN_DIR") or DEFAULT_DIR)


def discover(folder: str | os.PathLike | None = None) -> list[Path]:
    """Every `<name>.json` with a `<name>.safetensors` beside it."""
    folder = Path(folder) if folder is not None else golden_dir()
    return sorted(p for p in folder.glob("*.json") if p.with_suffix(".safetensors").exists())


def load_fixture(json_path: str | os.PathLike) -> Fixture:
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text())
    return Fixture(name=json_path.stem, kind=meta["kind"], meta=meta,
                   tensors=load_safetensors(json_path.with_suffix(".safetensors")), folder=json_path.parent)


def runner_for(kind: str):
    """The run function for `kind`, or None when no family record claims it (imported on first use,
    so one family's import error never hides the others)."""
    module = runner_module(kind)
    return None if module is None else importlib.import_module(f"{__name__}.{module}").run


def tolerance(fixture: Fixture, name: str, expected: torch.Tensor) -> float:
    atol = fixture.meta.get("tolerance", {}).get("atol_per_output", {}).get(name)
    return float(atol) if atol is not None else 1e-4 * max(1.0, expected.abs().max().item())


def compare(fixture: Fixture, actual: dict[str, torch.Tensor]) -> list[OutputCheck]:
    """Check every `out.*` of the fixture: floats by the fixture's tolerance, integers exactly."""
    checks = []
    for name, exp in sorted(fixture.expected.items()):
        got = actual.get(name)
        if got is None:
            checks.append(OutputCheck(name, False, "not produced by our implementation"))
            continue
        got = got.detach().cpu()
        if tuple(got.shape) != tuple(exp.shape):
            checks.append(OutputCheck(name, False, f"shape {tuple(got.shape)} != expected {tuple(exp.shape)}"))
        elif exp.is_floating_point():
            atol = tolerance(fixture, name, exp)
            err = (got.double() - exp.double()).abs()
            bound = atol + 1e-4 * exp.double().abs()
            ok = bool((err <= bound).all())
            checks.append(OutputCheck(name, ok, f"max abs err {err.max().item():.3g} (atol {atol:.3g})"))
        else:
            wrong = int((got.long() != exp.long()).sum())
            checks.append(OutputCheck(name, wrong == 0, f"{wrong} of {exp.numel()} integers differ"))
    return checks


def check(fixture: Fixture) -> list[OutputCheck] | None:
    """Run and compare one fixture; None when its kind has no runner yet."""
    run = runner_for(fixture.kind)
    if run is None:
        return None
    with torch.no_grad():
        actual = run(fixture)
    return compare(fixture, actual)
