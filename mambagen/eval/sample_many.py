"""`mambagen sample-many`: many class-conditional samples for FID, sharded over ranks, resumable.

    out_dir/
      meta.json                     the sampling settings; a restart with other settings is refused
      shards/shard_<first>.npz      one per batch, written atomically: arr_0 uint8 (b, H, W, 3),
                                    labels (b,), indices (b,) - the global indices it holds -, tokens (b, N)
      samples.npz                   arr_0 uint8 (N, H, W, 3) + labels (N,), in global-index order (ADM layout)
      preview.png                   the first few samples of each class

Global index i in [0, N) has label classes[i // per_class]. Rank r of W takes r, r + W, r + 2W, ...
(`rank_indices`). Every image draws its tokens from its own generator seeded from (seed, i)
(`image_seed`) and is decoded on its own, so the archive does not depend on the world size or
the batch size. (The generator's arithmetic can still differ between batch shapes - on GPUs
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
import torch.nn.functional as F

from ..images import make_grid, save_image, save_npz, to_uint8
from ..io import atomic_path, read_json, write_json
from ..sample.fast import sample_with_noise
from ..sample.logits import cfg_combine, check_sampling_args
from ..sample.pipeline import check_pair
from ..sample.random_order import generate_random_order
from ..sample.raster import generate_raster
from ..sample.scales import generate_scales

META_FORMAT = "mambagen-samples"
PREVIEW_PER_CLASS, PREVIEW_CLASSES = 8, 16


@dataclass(frozen=True)
class SampleSpec:
    """What to sample; recorded in meta.json and compared on every restart."""
    classes: tuple[int, ...]
    per_class: int
    seed: int = 0
    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    model: str = ""                     # where the weights came from
    ema: bool = False

    def __post_init__(self):
        if not self.classes or self.per_class < 1:
            raise ValueError(f"need at least one class and per_class >= 1, got {len(self.classes)} classes, "
                             f"per_class {self.per_class}")
        check_sampling_args(self.cfg_scale, self.temperature, self.top_k, self.top_p)

    @property
    def num_samples(self) -> int:
        return len(self.classes) * self.per_class

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        """Global indices (n,) -> class labels (n,) int64."""
        return np.asarray(self.classes, dtype=np.int64)[np.asarray(indices) // self.per_class]

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


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
class _RowDraws:
    """A generator wrapper that draws every image's tokens from that image's own torch.Generator.

    The shared samplers draw a whole batch from one generator, so an image's draws would depend
    on its batch mates. Here the wrapper draws each row itself - CFG, temperature, top-k/p, then
    Gumbel-max with that row's noise (`sample_with_noise`) - and hands the sampler one-hot logits,
    which the sampler's greedy mode (temperature 0) returns unchanged (CFG of two equal one-hot
    rows is that row). The sampler's loop and cache handling are reused as they are.
    """

    def __init__(self, model, generators: list[torch.Generator], cfg_scale: float, temperature: float,
                 top_k: int, top_p: float):
        self.model, self.generators = model, generators
        self.cfg_scale, self.temperature, self.top_k, self.top_p = cfg_scale, temperature, top_k, top_p

    def __getattr__(self, name):
        return getattr(self.model, name)        # config, allocate_cache, condition, ...

    def _draw(self, logits: torch.Tensor, guidance: float) -> torch.Tensor:
        """logits (B or 2B, ..., V) -> one-hot logits of the drawn tokens, same shape."""
        B = len(self.generators)
        guided = logits.shape[0] == 2 * B
        if guided:
            logits = cfg_combine(*logits.float().chunk(2), guidance)
        noise = None
        if not (self.temperature == 0 or self.top_k == 1):        # greedy needs no noise
            noise = torch.stack([torch.rand(logits.shape[1:], generator=g, device=logits.device)
                                 for g in self.generators])
        tok = sample_with_noise(logits, noise, self.temperature, self.top_k, self.top_p)
        onehot = F.one_hot(tok, logits.shape[-1]).float()
        return torch.cat([onehot, onehot]) if guided else onehot


class _RasterRowDraws(_RowDraws):
    def prefill(self, *args, **kwargs):
        return self._draw(self.model.prefill(*args, **kwargs), self.cfg_scale)

    def step(self, *args, **kwargs):
        return self._draw(self.model.step(*args, **kwargs), self.cfg_scale)


class _ScaleRowDraws(_RowDraws):
    def decode_scale(self, x, cond, mod, cache, si: int):
        # the official next-scale guidance ramp (as generate_scales): 1 at the first scale, cfg_scale at the last
        S = len(self.model.config.patch_nums)
        guidance = 1 + (self.cfg_scale - 1) * si / max(1, S - 1)
        return self._draw(self.model.decode_scale(x, cond, mod, cache, si), guidance)


def decode_each(generator, tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """Token rows (B, N) -> images (B, 3, H, W) in [-1, 1], decoding one image at a time.

    Convolutions may pick other algorithms for other batch sizes (on CPU, batch 1 vs 2 already
    differs by ~1e-5), which could move a pixel across a uint8 rounding boundary; alone, an
    image's pixels are a function of its tokens only. Decoding is a small part of sampling's cost.
    """
    if hasattr(tokenizer, "patch_nums"):                 # multi-scale: f_hat rebuilt from all scales' ids
        rows = [tokenizer.decode(row) for row in tokens.split(1)]
    else:
        rows = [tokenizer.decode(row, grid=generator.config.grid) for row in tokens.split(1)]
    return torch.cat(rows).clamp(-1, 1)


@torch.no_grad()
def sample_rows(generator, tokenizer, labels: torch.Tensor, seeds: list[int], *, cfg_scale: float = 1.0,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, 3, H, W) in [-1, 1], tokens (B, N)) for labels (B,).

    Row b draws its tokens from a generator seeded with seeds[b] and is decoded on its own. The
    token loops are the shared samplers', dispatched as `sample_images` does.
    """
    check_sampling_args(cfg_scale, temperature, top_k, top_p)
    check_pair(generator, tokenizer)
    if len(seeds) != len(labels):
        raise ValueError(f"{len(seeds)} seeds for {len(labels)} labels")
    gens = [torch.Generator(device=labels.device).manual_seed(int(s)) for s in seeds]
    if hasattr(generator, "decode_step"):
        # random order (ARPG): each row on its own - its order and draws from its generator, the official
        # linear CFG ramp and the same step count as `sample_images`
        steps = min(64, generator.config.num_tokens)
        tokens = torch.cat([generate_random_order(generator, labels[b:b + 1], num_iter=steps, cfg_scale=cfg_scale,
                                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                                  generator=g).tokens for b, g in enumerate(gens)])
    elif hasattr(generator, "decode_scale"):
        model = _ScaleRowDraws(generator, gens, cfg_scale, temperature, top_k, top_p)
        res = generate_scales(model, tokenizer.quantize, labels, cfg=cfg_scale - 1, temperature=0.0)
        tokens = torch.cat(res.indices, dim=1)
    else:
        model = _RasterRowDraws(generator, gens, cfg_scale, temperature, top_k, top_p)
        tokens = generate_raster(model, labels, cfg_scale=cfg_scale, temperature=0.0).tokens
    return decode_each(generator, tokenizer, tokens), tokens


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


def sample_shard(generator, tokenizer, spec: SampleSpec, out_dir: str | os.PathLike, *, rank: int = 0,
                 world: int = 1, batch_size: int = 32, device: str | torch.device = "cpu",
                 progress: bool = True) -> int:
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
        images, tokens = sample_rows(generator, tokenizer, torch.as_tensor(labels, device=device),
                                     [image_seed(spec.seed, int(i)) for i in idx], cfg_scale=spec.cfg_scale,
                                     temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p)
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


def preview_grid(images: np.ndarray, spec: SampleSpec):
    """The first few samples of the first classes, one row per class."""
    per = min(spec.per_class, PREVIEW_PER_CLASS)
    rows = range(min(len(spec.classes), PREVIEW_CLASSES))
    idx = [c * spec.per_class + j for c in rows for j in range(per)]
    return make_grid(images[idx], nrow=per, scale=2 if images.shape[1] <= 64 else 1)
