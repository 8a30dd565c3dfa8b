"""`mambagen sample-many`: many class-conditional samples for FID, sharded over ranks, resumable.

    out_dir/
      meta.json                     the sampling settings; a restart with other settings is refused
      shards/shard_<first>.npz      one per batch, written atomically: arr_0 uint8 (b, H, W, 3),
                                    labels (b,), indices (b,) - the global indices it holds -, tokens (b, N)
      samples.npz                   arr_0 uint8 (N, H, W, 3) + labels (N,), in global-index order (ADM layout)
      preview.png                   the first few samples of each class

Global index i in [0, N) has label classes[i // per_class]. Rank r of W takes r, r + W, r + 2W, ...
(`rank_indices`). Batches run through the family's sampler - its fast path on CUDA - with every image
drawing its tokens from its own stream seeded from (seed, i) (`image_seed`, `sample.streams.RowStreams`)
and decoded in fixed-shape batches (`tokenizers.decode_fixed`), so the archive does not depend on the
world size or the batch size. (The model's arithmetic can still differ between batch shapes - on GPUs
that may flip a rare near-tie draw; on CPU the tests find it exact.) A restart skips every index
some shard already holds, whatever world size or batch size wrote it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..images import make_grid, save_image, save_npz, to_uint8
from ..io import atomic_path, read_json, write_json
from ..sample.config import SamplingConfig
from ..sample.pipeline import Sampler
from ..sample.streams import RowStreams
from ..tokenizers import decode_fixed, is_multiscale

META_FORMAT = "mambagen-samples"
PREVIEW_PER_CLASS, PREVIEW_CLASSES = 8, 16


STREAMS = "rows-splitmix64"   # how images draw their tokens (`sample.streams`); recorded, so a change is refused


@dataclass(frozen=True)
class SampleSpec:
    """What to sample; recorded in meta.json and compared on every restart."""
    classes: tuple[int, ...]
    per_class: int
    sampling: SamplingConfig = SamplingConfig()
    model: str = ""                     # where the weights came from
    ema: bool = False
    streams: str = STREAMS
    precision: str = "fp32"             # the generator's weights while sampling (bf16 on CUDA by default)

    def __post_init__(self):
        if not self.classes or self.per_class < 1:
            raise ValueError(f"need at least one class and per_class >= 1, got {len(self.classes)} classes, "
                             f"per_class {self.per_class}")

    @property
    def num_samples(self) -> int:
        return len(self.classes) * self.per_class

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        """Global indices (n,) -> class labels (n,) int64."""
        return np.asarray(self.classes, dtype=np.int64)[np.asarray(indices) // self.per_class]

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes), "sampling": self.sampling.to_dict()}


def image_seed(seed: int, index: int) -> int:
    """The RNG seed of global sample `index`: a hash of (seed, index), independent of everything else."""
    digest = hashlib.blake2b(f"sample-many/{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def rank_indices(n: int, rank: int, world: int) -> np.ndarray:
    """The global indices rank `rank` of `world` samples: rank, rank + world, ..."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return np.arange(rank, n, world, dtype=np.int64)


# ------------------------------------------------------------------------------------ per-image draws
@torch.no_grad()
def sample_rows(model, tokenizer, labels: torch.Tensor, seeds: list[int], sampling: SamplingConfig, *,
                fast: bool | None = None, compile: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, 3, H, W) in [-1, 1], tokens (B, N)) for labels (B,).

    The whole batch runs through the family's sampler (its fast path on CUDA), row b drawing from its
    own stream seeded with seeds[b] (`RowStreams`), and is decoded in fixed-shape batches
    (`decode_fixed`): an image depends on its seed and label only.
    """
    tokens = sample_tokens(model, tokenizer, labels, seeds, sampling, fast=fast, compile=compile)
    return decode_fixed(tokenizer, tokens, None if is_multiscale(tokenizer) else model.config.grid), tokens


@torch.no_grad()
def sample_tokens(model, tokenizer, labels: torch.Tensor, seeds: list[int], sampling: SamplingConfig, *,
                  fast: bool | None = None, compile: bool = False) -> torch.Tensor:
    """The token generation of `sample_rows` (what `mambagen bench` times as kind sample_many)."""
    if sampling.more_smooth:
        raise ValueError("more_smooth mixes code vectors (a visualisation); sample-many stores tokens: leave it off")
    if len(seeds) != len(labels):
        raise ValueError(f"{len(seeds)} seeds for {len(labels)} labels")
    sampler = Sampler(model, tokenizer, sampling, fast=fast, compile=compile)
    return sampler.tokens(labels, RowStreams.from_seeds(seeds, labels.device))


# ------------------------------------------------------------------------------------ shards
def shard_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "shards"


def read_shard(path: Path, keys=("arr_0", "labels", "indices")) -> dict | None:
    """The arrays of one shard, or None if it cannot be read (it is then sampled again)."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in keys}
    except (OSError, EOFError, KeyError, ValueError):
        return None


def done_indices(out_dir: str | os.PathLike) -> set[int]:
    """Global indices held by the readable shards under out_dir/shards."""
    done: set[int] = set()
    for path in sorted(shard_dir(out_dir).glob("shard_*.npz")):
        shard = read_shard(path, keys=("indices",))
        if shard is not None:
            done.update(shard["indices"].tolist())
    return done


def write_shard(out_dir: str | os.PathLike, indices: np.ndarray, images: np.ndarray, labels: np.ndarray,
                tokens: np.ndarray) -> Path:
    """Atomically write one batch; named by its first global index (unique: indices are never redone)."""
    path = shard_dir(out_dir) / f"shard_{int(indices[0]):09d}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=images, labels=labels, indices=indices, tokens=tokens)
    return path


def check_meta(out_dir: str | os.PathLike, spec: SampleSpec, write: bool) -> None:
    """Refuse to mix settings in one out_dir; `write` (rank 0) records them on the first run."""
    path = Path(out_dir) / "meta.json"
    if path.exists():
        old = read_json(path).get("spec", {})
        new = spec.to_dict()
        diff = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
        if diff:
            raise ValueError(f"{out_dir} holds samples made with other settings (old, new): {diff}; "
                             "use a new --out, or delete it to start over")
    elif write:
        write_json(path, {"format": META_FORMAT, "spec": spec.to_dict()})


def sample_shard(model, tokenizer, spec: SampleSpec, out_dir: str | os.PathLike, *, rank: int = 0,
                 world: int = 1, batch_size: int = 32, device: str | torch.device = "cpu",
                 progress: bool = True, fast: bool | None = None, compile: bool = False) -> int:
    """Sample rank `rank`'s images that no shard holds yet, one atomic shard per batch.

    Returns how many images were sampled now (0 when this rank's part was already complete).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    done = done_indices(out_dir)
    todo = np.array([i for i in rank_indices(spec.num_samples, rank, world) if int(i) not in done], dtype=np.int64)
    batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    for idx in tqdm(batches, desc=f"sampling (rank {rank})", unit="batch", disable=not progress):
        labels = spec.labels_of(idx)
        images, tokens = sample_rows(model, tokenizer, torch.as_tensor(labels, device=device),
                                     [image_seed(spec.sampling.seed, int(i)) for i in idx], spec.sampling,
                                     fast=fast, compile=compile)
        write_shard(out_dir, idx, to_uint8(images), labels, tokens.cpu().numpy())
    return len(todo)


def pack_samples(out_dir: str | os.PathLike, spec: SampleSpec, name: str = "samples.npz") -> Path:
    """All shards -> out_dir/<name> (ADM layout, global-index order) and out_dir/preview.png."""
    out_dir = Path(out_dir)
    n = spec.num_samples
    images, filled = None, np.zeros(n, dtype=bool)
    for path in sorted(shard_dir(out_dir).glob("shard_*.npz")):
        shard = read_shard(path)
        if shard is None:
            continue
        idx = shard["indices"]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{path}: holds indices outside [0, {n}): it belongs to another run")
        if not np.array_equal(shard["labels"], spec.labels_of(idx)):
            raise ValueError(f"{path}: its labels do not match this run's classes: it belongs to another run")
        if images is None:
            images = np.empty((n, *shard["arr_0"].shape[1:]), dtype=np.uint8)
        images[idx] = shard["arr_0"]
        filled[idx] = True
    missing = np.flatnonzero(~filled)
    if missing.size:
        raise ValueError(f"{out_dir}: {missing.size} of {n} samples are missing (first indices "
                         f"{missing[:5].tolist()}); run sample-many again with the same settings to finish")
    path = save_npz(out_dir / name, images, spec.labels_of(np.arange(n)))
    save_image(preview_grid(images, spec), out_dir / "preview.png")
    return path


def write_pngs(npz: str | os.PathLike, folder: str | os.PathLike, progress: bool = True) -> int:
    """Every image of a packed samples.npz as folder/<index>_<label>.png (each written atomically; ones
    already there are kept, so an interrupted export resumes). Returns how many were written now."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..io import atomic_path
    folder = Path(folder)
    with np.load(npz) as z:
        images, labels = z["arr_0"], z["labels"]
    width = len(str(len(images) - 1))
    written = 0
    for i in tqdm(range(len(images)), desc="png", unit="img", disable=not progress):
        path = folder / f"{i:0{width}d}_{int(labels[i])}.png"
        if path.exists():
            continue
        with atomic_path(path) as tmp:
            Image.fromarray(images[i]).save(tmp, format="PNG")
        written += 1
    return written


def preview_grid(images: np.ndarray, spec: SampleSpec):
    """The first few samples of the first classes, one row per class."""
    per = min(spec.per_class, PREVIEW_PER_CLASS)
    rows = range(min(len(spec.classes), PREVIEW_CLASSES))
    idx = [c * spec.per_class + j for c in rows for j in range(per)]
    return make_grid(images[idx], nrow=per, scale=2 if images.shape[1] <= 64 else 1)
