"""File I/O shared by every family: safe loading and atomic writes.

Loading never runs pickled code: `.safetensors` is plain data, and `.pt/.pth/.bin`
go through `torch.load(weights_only=True)` with a short allow-list (the official
training scripts pickle an `argparse.Namespace` next to the weights).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file is missing, torn, foreign or does not fit the model."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    A crash (or exception) while writing leaves the old file, if any, untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    # safetensors refuses tensors that share storage (tied weights): copy all but the first of each
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().contiguous()
        ptr = (v.device, v.untyped_storage().data_ptr())
        flat[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {e}") from None


def load_torch_file(path: str | os.PathLike) -> Any:
    """Load a `.pt/.pth/.bin` file without executing arbitrary pickled code."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(
            f"{path}: cannot be loaded safely (truncated, not a PyTorch file, or it pickles "
            f"objects outside the allow-list {[g.__name__ for g in SAFE_GLOBALS]}): {e}"
        ) from None


def load_weights(path: str | os.PathLike) -> Any:
    """A state dict (or a container of one) from `.safetensors` or a torch pickle file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return load_torch_file(path)


def unwrap_state_dict(obj: Any, keys=("model", "module", "state_dict")) -> dict[str, torch.Tensor]:
    """Find the state dict inside the containers the official training scripts write."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for k in keys:
            if k in obj and isinstance(obj[k], dict):
                return unwrap_state_dict(obj[k], keys)
    raise CheckpointError(
        f"no state dict found: expected a dict of tensors or one under {list(keys)}, "
        f"got {type(obj).__name__} with keys {list(obj)[:8] if isinstance(obj, dict) else '-'}"
    )


def dataclass_from_dict(cls, values: dict):
    """Build config dataclass `cls` from a dict (e.g. config.json), naming any unknown field."""
    import dataclasses
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**values)


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """`load_state_dict(strict=True)` with one clear message listing every problem."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:10]}")
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
