"""Our checkpoint format: a directory with config.json + model.safetensors.

    model_dir/
      config.json          {"format": "mambagen", "format_version": 1, "kind": "generator",
                            "family": "aim", "config": {...}, "tokenizer": "tokenizer" | null,
                            "files": {"model.safetensors": "sha256:...", ...}}
      model.safetensors    weights (a tied tensor stored once, its other names in the file's metadata)
      ema.safetensors      optional EMA weights
      tokenizer/           optional: a tokenizer directory of the same format (kind "tokenizer")

Files are written atomically and config.json last, so an interrupted save never
leaves a directory that loads; a torn or foreign file is a clear error. Loading
checks each weight file against its recorded digest (a flipped bit is named;
`verify=False` skips it) and refuses non-finite weights; paths inside
config.json never leave the directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .io import (CheckpointError, check_finite, load_safetensors, load_state_dict_strict, read_json, save_safetensors,
                 verify_digest, write_json)

FORMAT, FORMAT_VERSION = "mambagen", 1
DEMO_DIR = Path(__file__).resolve().parent / "assets" / "emoji-aim-demo"   # `load("demo")`: the shipped pipeline


def resolve(path: str | os.PathLike) -> Path:
    """'demo' is the pipeline shipped in the package; anything else is a path (names of released or hub
    checkpoints are resolved a floor above, in `sources.resolve`)."""
    return DEMO_DIR if str(path) == "demo" else Path(path)


def tokenizer_family(tokenizer: nn.Module) -> str:
    from .tokenizers import kind_of
    return kind_of(tokenizer).name


def model_family(model: nn.Module) -> str:
    from .models.registry import family_of
    return family_of(model).name


def save_tokenizer(tokenizer: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    path = Path(path)
    files = {"model.safetensors": save_safetensors(path / "model.safetensors", tokenizer.state_dict())}
    write_json(path / "config.json", {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "tokenizer",
                                      "family": tokenizer_family(tokenizer), "config": tokenizer.config.to_dict(),
                                      **(extra or {}), "files": files})
    return path


def save_model(model: nn.Module, path: str | os.PathLike, *, tokenizer: nn.Module | None = None,
               ema: dict[str, torch.Tensor] | None = None, extra: dict | None = None,
               state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a generator (and optionally its tokenizer: a pipeline) to `path`.

    `state` replaces `model.state_dict()` (e.g. a full state dict gathered from FSDP shards).
    """
    path = Path(path)
    if tokenizer is not None:
        save_tokenizer(tokenizer, path / "tokenizer")
    files = {"model.safetensors": save_safetensors(path / "model.safetensors",
                                                   tied_like(model, model.state_dict() if state is None else state))}
    if ema is not None:
        files["ema.safetensors"] = save_safetensors(path / "ema.safetensors", tied_like(model, ema))
    write_json(path / "config.json", {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "generator",
                                      "family": model_family(model), "config": model.config.to_dict(),
                                      "tokenizer": "tokenizer" if tokenizer is not None else None,
                                      **(extra or {}), "files": files})
    return path


def tied_like(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the model's tied parameters as one tensor under each name (a gathered FSDP state
    dict or an EMA holds separate copies), so the file stores each tie once."""
    first: dict[int, str] = {}
    out = dict(state)
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first and name in out and first[id(p)] in out:
            out[name] = out[first[id(p)]]
        first.setdefault(id(p), name)
    return out


def inside(folder: Path, name, what: str) -> Path:
    """folder/name for a name read from one of our files, refused if it leaves `folder` (`../`, absolute)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{what}: {name!r} must be a relative path inside {folder}")
    return folder / name


def read_config(path: str | os.PathLike) -> dict:
    path = resolve(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (a mambagen checkpoint is a directory with config.json)")
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path}: no config.json - not a mambagen checkpoint, or an interrupted save")
    meta = read_json(path / "config.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}/config.json is not a mambagen checkpoint (format={meta.get('format')!r}); "
                              "official checkpoints go through `mambagen convert`")
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{path}/config.json: its \"config\" must be a JSON object")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta['format_version']} is newer than this mambagen "
                              f"({FORMAT_VERSION}); upgrade mambagen")
    return meta


def load_weight_file(path: Path, meta: dict, name: str, verify: bool = True) -> dict:
    """path/name's tensors, checked against config.json's digest (when recorded and `verify`)."""
    file = path / name
    digest = (meta.get("files") or {}).get(name)
    if verify:
        verify_digest(file, digest)
    return load_safetensors(file)


def _load_weights_into(module: nn.Module, path: Path, meta: dict, name: str, device, verify: bool) -> nn.Module:
    state = load_weight_file(path, meta, name, verify)
    check_finite(state, str(path / name), {n for n, _ in module.named_parameters(remove_duplicate=False)})
    load_state_dict_strict(module, state, str(path / name))
    return module.to(device).eval()


def _tokenizer_from(path: Path, meta: dict, device, verify: bool = True) -> nn.Module:
    from .tokenizers import KINDS
    if meta.get("kind") != "tokenizer":
        raise CheckpointError(f"{path}: holds a {meta.get('kind')}, not a tokenizer")
    if meta.get("family") not in KINDS:
        raise CheckpointError(f"{path}: unknown tokenizer family {meta.get('family')!r}")
    kind = KINDS[meta["family"]]
    try:
        config = kind.config.from_dict(meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}/config.json does not describe a valid tokenizer: {e}") from None
    return _load_weights_into(kind.model(config), path, meta, "model.safetensors", device, verify)


def _generator_from(path: Path, meta: dict, device, ema: bool, verify: bool = True) -> nn.Module:
    from .models.registry import build_model
    if meta.get("kind") != "generator":
        raise CheckpointError(f"{path}: holds a {meta.get('kind')}, not a generator")
    try:
        model = build_model(meta["family"], meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise CheckpointError(f"{path}/config.json does not describe a valid model: {msg}") from None
    if ema and not (path / "ema.safetensors").is_file():
        raise CheckpointError(f"{path}: has no EMA weights (ema.safetensors); leave out --ema")
    return _load_weights_into(model, path, meta, "ema.safetensors" if ema else "model.safetensors", device, verify)


def load_tokenizer(path: str | os.PathLike, device="cpu", verify: bool = True) -> nn.Module:
    path = resolve(path)
    return _tokenizer_from(path, read_config(path), device, verify)


def load_model(path: str | os.PathLike, device="cpu", ema: bool = False, verify: bool = True) -> nn.Module:
    path = resolve(path)
    return _generator_from(path, read_config(path), device, ema, verify)


def class_names(meta: dict) -> list[str]:
    """The class names a config.json records ("classes", or the demo's), else []."""
    names = meta.get("classes") or (meta.get("demo") or {}).get("classes") or []
    return [str(n) for n in names] if isinstance(names, list) else []


@dataclass
class Pipeline:
    """A generator and the tokenizer whose ids it models (and its directory's config.json)."""
    generator: nn.Module
    tokenizer: nn.Module
    meta: dict | None = None


def load(path: str | os.PathLike, device="cpu", ema: bool = False, with_meta: bool = False, verify: bool = True):
    """A checkpoint directory -> a model, or a `Pipeline` when it holds a tokenizer too.
    A tokenizer directory loads as the tokenizer; "demo" is the pipeline shipped in the package.
    config.json is read once; with_meta=True returns (object, config.json) for the caller's defaults.
    verify=False skips the digest check of the weight files (a flipped bit then loads silently)."""
    path = resolve(path)
    meta = read_config(path)
    if meta.get("kind") == "tokenizer":
        obj = _tokenizer_from(path, meta, device, verify)
    else:
        model = _generator_from(path, meta, device, ema, verify)
        obj = model
        if meta.get("tokenizer"):
            tok_dir = inside(path, meta["tokenizer"], f"{path}/config.json \"tokenizer\"")
            obj = Pipeline(model, _tokenizer_from(tok_dir, read_config(tok_dir), device, verify), meta)
    return (obj, meta) if with_meta else obj
