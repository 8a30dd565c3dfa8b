"""Pre-tokenized datasets: encode images once, train the generator on token ids.

    out_dir/
      meta.json                  counts, grid, vocabulary, classes, tokenizer config, shard list
      shard_00000.safetensors    tokens (n, V, N) int16/int32 (V views: the original, its mirror with flip,
                                 and `augment` small scale/shift copies),
                                 labels (n,) int64

Stage 2 then never runs the tokenizer's encoder. With augmentation every view is
stored and `TokenDataset` picks one per (seed, epoch, index).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io import CheckpointError, load_safetensors, read_json, save_safetensors, write_json
from ..tokenizers import encode_ids

FORMAT = "mambagen-tokens"


def _index_dtype(vocab: int) -> torch.dtype:
    return torch.int16 if vocab <= 32767 else torch.int32


@torch.no_grad()
def shifted_view(images: torch.Tensor, first_index: int, k: int, max_shift: float = 0.05,
                 min_scale: float = 0.9) -> torch.Tensor:
    """Augmentation that keeps an emoji's meaning (no mirror: text and arrows): each image zoomed out to a
    scale in [min_scale, 1] and shifted by up to max_shift of its side, on white; a pure function of (the
    image's index in the dataset, k)."""
    import torch.nn.functional as F
    B = images.shape[0]
    g = torch.Generator().manual_seed(first_index * 1009 + k * 7919 + 17)
    rand = torch.rand(B, 3, generator=g)
    scale = 1.0 / (min_scale + (1 - min_scale) * rand[:, 0])                 # sampling grid > 1: zoom out
    shift = (rand[:, 1:] * 2 - 1) * max_shift * 2                            # in [-1, 1] grid units
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images - 1.0, grid, padding_mode="zeros", align_corners=False) + 1.0   # white outside


def tokenize_dataset(tokenizer, dataset, out_dir: str | os.PathLike, *, batch_size: int = 64, flip: bool = False,
                     augment: int = 0, shard_size: int = 65536, device="cpu", num_workers: int = 0,
                     progress: bool = True) -> Path:
    """Encode every image of `dataset` ((image in [-1, 1], label) items) into token shards: the image, its
    mirror with `flip`, and `augment` scale/shift views (`shifted_view`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dtype = _index_dtype(tokenizer.codebook_size)
    shards, buf_tok, buf_lab, n_total, grid, max_label = [], [], [], 0, None, -1

    def flush():
        nonlocal buf_tok, buf_lab
        if not buf_tok:
            return
        name = f"shard_{len(shards):05d}.safetensors"
        tok, lab = torch.cat(buf_tok), torch.cat(buf_lab)
        save_safetensors(out / name, {"tokens": tok, "labels": lab})
        shards.append({"file": name, "count": len(lab)})
        buf_tok, buf_lab = [], []

    for images, labels in tqdm(loader, desc="tokenizing", unit="batch", disable=not progress):
        images = images.to(device)
        views = [images, images.flip(-1)] if flip else [images]
        views += [shifted_view(images, n_total, k + 1) for k in range(augment)]
        ids = torch.stack([encode_ids(tokenizer, v) for v in views], dim=1)   # (b, V, N)
        if grid is None:
            grid = tokenizer.grid_size(tuple(images.shape[-2:]))
        buf_tok.append(ids.to(dtype).cpu())
        buf_lab.append(torch.as_tensor(labels, dtype=torch.long))
        n_total += len(labels)
        max_label = max(max_label, int(buf_lab[-1].max()))
        if sum(len(b) for b in buf_lab) >= shard_size:
            flush()
    flush()
    if n_total == 0:
        raise ValueError("the dataset is empty: nothing to tokenize")
    classes = list(getattr(dataset, "classes", []))
    write_json(out / "meta.json", {
        "format": FORMAT, "num_samples": n_total, "num_tokens": ids.shape[-1], "grid": list(grid),
        "vocab_size": tokenizer.codebook_size, "num_classes": len(classes) or max_label + 1,
        "classes": classes, "flip": flip, "augment": augment, "shards": shards,
        "tokenizer_config": tokenizer.config.to_dict()})
    return out


def _check_meta(root: Path, meta: dict) -> None:
    """meta.json's fields have the types and ranges a dataset needs, named when they do not."""
    for key in ("num_samples", "num_tokens", "vocab_size", "num_classes"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CheckpointError(f"{root}/meta.json: {key} must be a positive integer, got {v!r}")
    shards = meta.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, dict) for s in shards):
        raise CheckpointError(f"{root}/meta.json: shards must be a non-empty list of {{file, count}} objects")


def _read_shard(root: Path, entry: dict, meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (n, V, N) int64-able, labels (n,)) of one shard, every id and label checked against meta.json."""
    from ..checkpoint import inside
    file = inside(root, entry.get("file"), f"{root}/meta.json shard file")
    where = f"{file}"
    part = load_safetensors(file)
    if set(part) != {"tokens", "labels"}:
        raise CheckpointError(f"{where}: holds {sorted(part)}, expected tokens and labels")
    tokens, labels = part["tokens"], part["labels"]
    for name, t, dims in (("tokens", tokens, 3), ("labels", labels, 1)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise CheckpointError(f"{where}: {name} are {t.dtype}, expected integer ids")
        if t.dim() != dims:
            raise CheckpointError(f"{where}: {name} have shape {tuple(t.shape)}, expected {dims} dimension(s)")
    if tokens.shape[0] != labels.shape[0] or tokens.shape[-1] != meta["num_tokens"] or tokens.shape[1] < 1:
        raise CheckpointError(f"{where}: tokens {tuple(tokens.shape)} and labels {tuple(labels.shape)} do not make "
                              f"(n, views, {meta['num_tokens']} tokens) and (n,)")
    if "count" in entry and entry["count"] != len(labels):
        raise CheckpointError(f"{where}: holds {len(labels)} samples, meta.json says {entry['count']!r}")
    for name, t, top, what in (("tokens", tokens, meta["vocab_size"], "vocab_size"),
                               ("labels", labels, meta["num_classes"], "num_classes")):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= top):
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise CheckpointError(f"{where}: {name} hold {bad}, outside 0..{top - 1} ({what} {top} in meta.json)")
    return tokens, labels


class TokenDataset:
    """All shards in memory (ImageNet at 256 px: 1.28M x 2 x 256 int16 = 1.3 GB), checked when opened:
    meta.json's types, each shard's dtypes, shapes and every id and label in range.

    `batch(indices, epoch, seed)` returns (tokens (b, N) int64, labels (b,)): with
    flip data the view is drawn from (seed, epoch, index), so resuming is exact.
    """

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not (root / "meta.json").exists():
            raise CheckpointError(f"{root}: no meta.json - not a token dataset (make one with `mambagen tokenize`)")
        self.meta = meta = read_json(root / "meta.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{root}/meta.json is not a mambagen token dataset")
        _check_meta(root, meta)
        parts = [_read_shard(root, s, meta) for s in meta["shards"]]
        self.tokens = torch.cat([p[0] for p in parts])          # (n, V, N)
        self.labels = torch.cat([p[1] for p in parts])          # (n,)
        if len(self.labels) != meta["num_samples"]:
            raise CheckpointError(f"{root}: shards hold {len(self.labels)} samples, meta.json says {meta['num_samples']}")
        self.num_tokens, self.vocab_size = meta["num_tokens"], meta["vocab_size"]
        self.num_classes, self.classes = meta["num_classes"], meta.get("classes", [])

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, epoch: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.tokens.shape[1]
        if views == 1:
            view = torch.zeros(len(indices), dtype=torch.long)
        else:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            view = torch.randint(views, (len(self),), generator=g)[indices]
        return self.tokens[indices, view].long(), self.labels[indices]
