"""File I/O shared by every family: safe loading and atomic writes.

Loading never runs pickled code: `.safetensors` is plain data, and `.pt/.pth/.bin`
go through `torch.load(weights_only=True)` with a short allow-list (the official
training scripts pickle an `argparse.Namespace` next to the weights).

Every file is written beside its name and renamed into place (`atomic_path`), with the
mode the process umask gives (mkstemp's 0600 would hide checkpoints from a cluster group);
a full disk is one `WriteError` naming the folder and its free space. Tied weights are
stored once (the other names are recorded in the file's metadata and re-tied on load);
`file_digest` is what config.json records so a flipped bit is caught on load.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file is missing, torn, foreign or does not fit the model."""


class WriteError(RuntimeError):
    """A file could not be written (a full disk, a read-only folder); nothing half-written is left."""


ALIASES_KEY = "mambagen.aliases"   # safetensors metadata: {name: name it shares its tensor with}


def file_mode() -> int:
    """The mode a plain `open(..., "w")` would give: 0666 under the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def free_space(folder: str | os.PathLike) -> str:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB" if free < 2**30 else f"{free / 2**30:.1f} GiB"


def write_error(path: str | os.PathLike, err: BaseException) -> WriteError:
    """One line for a failed write: a full disk names the folder's free space."""
    folder = Path(path).parent
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "write failed" in str(err) \
        or "No space left" in str(err)
    if full:
        return WriteError(f"cannot write {path}: the disk is full ({free_space(folder)} free in {folder}); "
                          "free some space or choose another output folder")
    text = str(err).strip()
    reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    return WriteError(f"cannot write {path}: {reason}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    A crash (or exception) while writing leaves the old file, if any, untouched; a failed write
    (a full disk) removes the temporary file and raises one `WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from None
        except RuntimeError as e:   # torch.save on a full disk: "enforce fail at inline_container.cc"
            if isinstance(e, WriteError) or "inline_container" not in str(e) and "write failed" not in str(e):
                raise
            raise write_error(path, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def file_digest(path: str | os.PathLike) -> str:
    """'sha256:<hex>' of a file's bytes (what config.json records for each weight file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_digest(path: str | os.PathLike, expected: str | None) -> None:
    """Refuse a file whose bytes changed since `expected` was recorded (None: nothing recorded)."""
    if expected is None:
        return
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    if file_digest(path) != expected:
        raise CheckpointError(f"{path} is corrupt: its contents do not match the digest recorded when it was "
                              "saved; copy it again (or pass --no-verify to load it anyway)")


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


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Write `tensors` atomically; a tensor held under several names (tied weights) is stored once and
    its other names recorded in the metadata (`load_safetensors` re-ties them). Returns the file digest."""
    from safetensors.torch import save_file

    flat, aliases, first, storages = {}, {}, {}, set()
    for k, v in tensors.items():
        v = v.detach()
        view = (v.device, v.data_ptr(), v.dtype, tuple(v.shape), v.stride()) if v.numel() else None
        if view is not None and view in first:
            aliases[k] = first[view]
            continue
        if view is not None:
            first[view] = k
        # safetensors refuses tensors that share storage without being the same view: copy those
        storage = (v.device, v.untyped_storage().data_ptr())
        flat[k] = v.contiguous().clone() if storage in storages else v.contiguous()
        storages.add(storage)
    meta = {"format": "pt", "writer": "mambagen", **{k: str(v) for k, v in (metadata or {}).items()}}
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    with atomic_path(path) as tmp:
        try:
            save_file(flat, str(tmp), metadata=meta)
        except Exception as e:   # safetensors reports a full disk as its own error type
            if isinstance(e, OSError) or "No space" in str(e) or "os error 28" in str(e):
                raise write_error(path, OSError(errno.ENOSPC, str(e))) from None
            raise
        digest = file_digest(tmp)
    return digest


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file by name (tied names share one tensor again)."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {k: f.get_tensor(k) for k in f.keys()}
            aliases = json.loads((f.metadata() or {}).get(ALIASES_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or foreign?): {e}") from None
    if not isinstance(aliases, dict) or any(v not in out for v in aliases.values()):
        raise CheckpointError(f"{path}: its tied-weight record names tensors the file does not hold")
    for alias, source in aliases.items():
        out[alias] = out[source]
    return out


def load_torch_file(path: str | os.PathLike) -> Any:
    """Load a `.pt/.pth/.bin` file without executing arbitrary pickled code."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    import warnings
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # torch's notes on pickle protocols: our line says it
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(
            f"{path}: cannot be loaded safely (truncated, not a PyTorch file, or it pickles "
            f"objects outside the allow-list {[g.__name__ for g in SAFE_GLOBALS]}): {_load_reason(e)}"
        ) from None


def _load_reason(err: BaseException) -> str:
    """torch's reason without its advice to load with weights_only=False (which would run the pickle)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    for cut in (" Please use", " Check the documentation", " To load", " (1)"):
        line = line.split(cut, 1)[0]
    return line.strip().rstrip(".") if "weights_only" not in line else type(err).__name__


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
    """Build config dataclass `cls` from a dict (e.g. config.json), naming any unknown field and any value
    of the wrong type (`d_model: "64"`, `n_layer: null`) before the model ever sees it."""
    import dataclasses
    if not isinstance(values, dict):
        raise ValueError(f"a {cls.__name__} must be a JSON object, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
    check_field_types(cls, values)
    return cls(**values)


def check_field_types(cls, values: dict) -> None:
    """Each value fits its field's annotation (int, float, bool, str, tuples/lists of them, Optional)."""
    import typing
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _fits(value, hints.get(name, typing.Any)):
            raise ValueError(f"{cls.__name__}.{name} must be {_type_name(hints[name])}, got {value!r}")


def _fits(value, hint) -> bool:
    import types
    import typing
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        if not inner:
            return True
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            return all(_fits(v, inner[0]) for v in value)
        return len(value) == len(inner) and all(_fits(v, a) for v, a in zip(value, inner))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True   # other annotations: the config's own checks


def _type_name(hint) -> str:
    import typing
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if len(args) >= 1 and len(typing.get_args(hint)) > len(args):
        return " or ".join(_type_name(a) for a in args) + " or null"
    if len(args) > 1:
        return " or ".join(_type_name(a) for a in args)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """`load_state_dict(strict=True)` with one clear message listing every problem."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    # float <-> float is a precision choice; anything else (float weights stored as int32) is a foreign file
    dtypes = [f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}"
              for k in sorted(set(own) & set(state)) if state[k].dtype != own[k].dtype
              and not (state[k].is_floating_point() and own[k].is_floating_point())]
    if missing or unexpected or shapes or dtypes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:10]}")
        if dtypes:
            parts.append(f"dtype mismatches ({len(dtypes)}): {dtypes[:10]}")
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def nonfinite_tensors(state: dict[str, torch.Tensor], parameters=None) -> list[str]:
    """Names of tensors holding NaN, or inf among `parameters` (all, when None): buffers may hold -inf
    (attention masks)."""
    def bad(k, v):
        if not v.is_floating_point():
            return False
        return bool(torch.isnan(v).any()) if parameters is not None and k not in parameters \
            else not bool(torch.isfinite(v).all())
    return [k for k, v in state.items() if bad(k, v)]


def check_finite(state: dict[str, torch.Tensor], what: str, parameters=None) -> None:
    """Refuse weights holding NaN/inf (a diverged run: sampling them gives NaN probabilities)."""
    found = nonfinite_tensors(state, parameters)
    if found:
        raise CheckpointError(f"{what} holds non-finite weights (NaN/inf in {len(found)} tensor(s), e.g. {found[0]}): "
                              "it comes from a diverged run; use an earlier checkpoint")
