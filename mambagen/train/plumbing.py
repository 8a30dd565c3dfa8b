"""What both trainers share (the generator's `loop.py`, the tokenizer's `tokenizer.py`).

    CheckpointFolders(root)       checkpoints/step_<N>/, each written beside its final name and renamed
                                  into place (never rewritten in place), complete when its train state is
                                  there; the last `keep` kept; `last_good` the newest with finite weights
                                  older than a divergence
    write_train_state / read_...  the resume state (optimisers, step, RNG states, ...), written last
    rng_state / set_rng_state     every RNG a loop may touch (Python, NumPy, torch, CUDA)
    ema_init / ema_update         an EMA of the weights: parameters averaged, buffers copied
    lr_at                         linear warm-up, then constant or cosine decay (a pure function of the step)
    clip_gradients                max gradient norm; 0 = no clipping, in both trainers
    diverged                      the error a NaN/inf stops a run with, naming the last good checkpoint
    replace_folder                write a folder beside its name, then rename it over the old one
    autocast_for                  bf16 autocast on CUDA (or as asked), float32 on CPU
"""
from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..io import (CheckpointError, atomic_path, nonfinite_tensors, file_digest, load_safetensors, load_torch_file, read_json,
                  verify_digest, write_json)

TRAIN_STATE = "train_state.pt"


class TrainingDiverged(RuntimeError):
    """The loss (or a gradient norm) became NaN or infinite; the last good checkpoint is left as it was."""


def diverged(what: str, value, step: int, last_checkpoint: Path | None, detail: str = "") -> TrainingDiverged:
    """The error for `what` becoming `value` at `step` (1-based)."""
    where = (f"the last good checkpoint is {last_checkpoint} (continue with --resume, perhaps with a lower --lr)"
             if last_checkpoint is not None else "the last good checkpoint is none (none written yet)")
    return TrainingDiverged(f"{what} became {float(value)} at step {step}{f' ({detail})' if detail else ''}; "
                            f"stopped without writing a checkpoint; {where}; or check the data")


def weights_finite(state: dict[str, torch.Tensor], parameters=None) -> bool:
    return not nonfinite_tensors(state, parameters)


def replace_folder(final: Path, fill: Callable[[Path], None]) -> Path:
    """fill(tmp) writes a folder beside `final`; it then replaces `final` by renames only, so a kill at
    any point leaves either the old folder or the new one (`recover` puts a half-swapped one back)."""
    final = Path(final)
    tmp, old = final.parent / f".{final.name}.tmp", final.parent / f".{final.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)    # a full disk must not stay full of a torn save
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def recover(folder: Path) -> None:
    """Undo what a kill in `replace_folder` left: the old folder back under its name, torn new ones gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for d in folder.iterdir():
        if d.name.startswith(".") and d.name.endswith(".old") and d.is_dir():
            name = folder / d.name[1:-4]
            if name.exists():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.rename(name)
        elif d.name.startswith(".") and d.name.endswith(".tmp") and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------ checkpoints
class CheckpointFolders:
    """root/step_<N>/ training checkpoints (N zero-padded to `width` digits)."""

    def __init__(self, root: str | Path, width: int = 0):
        self.root, self.width = Path(root), width
        self.pattern = re.compile(r"^step_(\d+)$")

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:0{self.width}d}"

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first (folders of torn saves never get a step_<N> name)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), d) for d in self.root.iterdir()
                 if (m := self.pattern.match(d.name)) and (d / TRAIN_STATE).is_file()]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1][1] if found else None

    def write(self, step: int, fill: Callable[[Path], None]) -> Path:
        """fill(folder) writes the checkpoint into a temporary folder beside its final name (the train
        state last, `write_train_state`); it is then renamed into place, replacing a checkpoint of the
        same step only once the new one is complete (a failed write leaves no temporary folder)."""
        return replace_folder(self.path(step), fill)

    def recover(self) -> None:
        """Clean what a kill mid-save left (call once when a run starts)."""
        recover(self.root)

    def last_good(self, before: int, weights: str = "model.safetensors", parameters=None) -> Path | None:
        """The newest checkpoint older than step `before` (the weights of step `before` gave a NaN/inf
        loss) whose weights are finite: the one to resume a diverged run from."""
        for step, folder in reversed(self.list()):
            if step >= before:
                continue
            try:
                if weights_finite(load_safetensors(folder / weights), parameters):
                    return folder
            except CheckpointError:
                continue
        return None

    def rotate(self, keep: int) -> None:
        for _, old in self.list()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


DIGESTS = "digests.json"   # {file: sha256} of a training checkpoint's files


def write_train_state(folder: Path, state: dict) -> None:
    """The resume state, atomically, then the digest of every file in the checkpoint (verified on resume);
    the weight files' digests config.json already records are reused, not computed again."""
    with atomic_path(folder / TRAIN_STATE) as tmp:
        torch.save(state, tmp)
    known = (read_json(folder / "config.json").get("files") or {}) if (folder / "config.json").is_file() else {}
    write_json(folder / DIGESTS, {p.name: known.get(p.name) or file_digest(p) for p in sorted(folder.iterdir())
                                  if p.is_file() and p.suffix in (".pt", ".safetensors")})


def read_train_state(folder: Path, verify: bool = True) -> dict:
    """The resume state of checkpoint `folder`, after checking its files' digests (a flipped bit is named)."""
    if verify and (folder / DIGESTS).is_file():
        digests = read_json(folder / DIGESTS)
        for name, digest in digests.items():
            verify_digest(folder / Path(name).name, digest)
    return load_torch_file(folder / TRAIN_STATE)


# ------------------------------------------------------------------------------------------ RNG
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all devices


def rng_state() -> dict:
    """Every RNG a training loop may touch, in types `torch.load(weights_only=True)` accepts."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`; RNGs an older checkpoint did not record are left alone."""
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ EMA
def full_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t   # FSDP shards -> whole tensor


def _parameter_names(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters(remove_duplicate=False)}   # tied weights under every name


@torch.no_grad()
def ema_init(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The EMA's state: a copy of the model's (floating tensors in `dtype`, e.g. float32 for bf16 weights)."""
    return {k: full_tensor(v).detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).clone()
            for k, v in model.state_dict().items()}


def load_ema(path: str | Path, device) -> dict[str, torch.Tensor]:
    """A checkpoint's EMA state on `device` (where the model trains and `ema_init` put it), a tensor stored
    once under two names (a tie) moved once, so that it stays one tensor."""
    moved: dict[int, torch.Tensor] = {}
    return {k: moved.setdefault(id(v), v.to(device)) for k, v in load_safetensors(path).items()}


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """Parameters move toward the model's by 1 - decay; buffers (code-usage records, constant masks,
    integer tables) are copied: averaging them means nothing (and turns -inf masks into NaN)."""
    params, done = _parameter_names(model), set()
    for k, v in model.state_dict().items():
        if ema[k].data_ptr() in done:      # a tied weight loaded as one tensor under two names: once
            continue
        done.add(ema[k].data_ptr())
        v = full_tensor(v)
        if k in params:
            ema[k].lerp_(v.to(ema[k].dtype), 1.0 - decay)
        else:
            ema[k].copy_(v)


# ------------------------------------------------------------------------------------------ schedule, clipping
def lr_at(step: int, peak: float, warmup: int, total: int, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """Learning rate of 0-based `step`: linear warm-up to `peak`, then constant, or cosine decay to
    `peak * min_ratio` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def clip_gradients(parameters, max_norm: float) -> torch.Tensor:
    """Clip to `max_norm` (0 = no clipping: the norm is still returned, for logging and NaN checks)."""
    return nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float("inf"))


def autocast_for(device: torch.device, precision: str = "auto"):
    """auto: bf16 autocast on CUDA (no loss scaling needed), float32 on CPU; bf16 / fp32 as asked."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
