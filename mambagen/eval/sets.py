"""Image sets to evaluate: an ADM-style .npz or a folder, always as uint8 (N, H, W, 3) in memory.

    .npz                 arr_0 uint8 NHWC (+ labels (N,)): `mambagen sample-many`, `mambagen sample --npz`,
                         the ADM/OpenAI reference batches
    root/<class>/<img>   class-per-folder (labels = sorted class index, as ImageFolder and tokenize)
    root/<img>           a flat folder of images (no labels)

Folder images go through the training transform (RGB on white, shorter side resized, centre crop).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.folder import DECODE_ERRORS, IMG_EXTENSIONS, ImageFolder, read_rgb, resize_center_crop


@dataclass
class ImageSet:
    images: np.ndarray                  # (N, H, W, 3) uint8
    labels: np.ndarray | None           # (N,) int64 class ids, or None
    source: str
    classes: list[str] = field(default_factory=list)   # folder class names (empty for .npz)
    skipped: int = 0                                    # unreadable folder images left out

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def subset(self, idx: np.ndarray) -> "ImageSet":
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(self.images[idx], labels, self.source, self.classes, self.skipped)


def random_subset(n: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct indices of range(n), sorted, drawn with a seeded generator."""
    if size > n:
        raise ValueError(f"asked for a subset of {size} from a set of {n}")
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def load_npz_images(path: str | os.PathLike) -> ImageSet:
    path = Path(path)
    try:
        with np.load(path) as z:
            if "arr_0" not in z.files:
                raise ValueError(f"{path}: no arr_0 in this .npz (found {z.files}); expected uint8 NHWC images")
            images = z["arr_0"]
            labels = z["labels"].astype(np.int64) if "labels" in z.files else None
    except (OSError, EOFError, ValueError) as e:
        if "arr_0" in str(e):
            raise
        raise ValueError(f"{path}: not a readable .npz ({e})") from None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"{path}: labels {labels.shape} do not match {len(images)} images")
    return ImageSet(images, labels, str(path))


def _list_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(file, label)]) for a class-per-folder tree, or ([], [(file, -1)]) for a flat folder."""
    has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(root))
    if has_dirs:
        ds = ImageFolder(root, image_size=1)     # only its index: sorted classes, (file, label) pairs
        return ds.classes, ds.samples
    files = sorted(str(p) for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMG_EXTENSIONS)}) and no class sub-folders")
    return [], [(f, -1) for f in files]


def _first_readable_size(samples: list[tuple[str, int]]) -> int:
    """Shorter side of the first image that decodes (the default reading size of a folder)."""
    for path, _ in samples:
        try:
            return min(read_rgb(path).size)
        except DECODE_ERRORS:
            continue
    raise ValueError(f"none of the {len(samples)} images could be read (first: {samples[0][0]})")


def load_folder_images(root: str | os.PathLike, image_size: int | None = None, limit: int | None = None,
                       seed: int = 0, progress: bool = True, num_threads: int = 8) -> ImageSet:
    """Read a folder (see module doc). image_size None: the first image's shorter side.
    `limit`: a seeded random subset of that many files (read only those)."""
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: folder not found")
    classes, samples = _list_folder(root)
    if limit is not None and limit < len(samples):
        samples = [samples[i] for i in random_subset(len(samples), limit, seed)]
    if image_size is None:
        image_size = _first_readable_size(samples)

    def read(sample):
        try:
            return np.asarray(resize_center_crop(read_rgb(sample[0]), image_size), dtype=np.uint8)
        except DECODE_ERRORS:
            return None

    with ThreadPoolExecutor(max(1, num_threads)) as pool:   # PIL decoders release the GIL
        arrays = list(tqdm(pool.map(read, samples), total=len(samples), unit="img", desc=f"reading {root.name}",
                           disable=not progress))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise ValueError(f"{root}: none of the {len(samples)} images could be read")
    images = np.stack([arrays[i] for i in keep])
    labels = np.array([samples[i][1] for i in keep], dtype=np.int64) if classes else None
    return ImageSet(images, labels, str(root), classes, skipped=len(samples) - len(keep))


def load_image_set(path: str | os.PathLike, image_size: int | None = None, limit: int | None = None,
                   seed: int = 0, progress: bool = True) -> ImageSet:
    """An .npz or a folder -> ImageSet; `limit` keeps a seeded random subset of that many images."""
    path = Path(path)
    if path.is_dir():
        return load_folder_images(path, image_size, limit, seed, progress)
    if not path.exists():
        raise ValueError(f"{path}: not found (expected an .npz of uint8 NHWC images or an image folder)")
    s = load_npz_images(path)
    if limit is not None and limit < len(s):
        s = s.subset(random_subset(len(s), limit, seed))
    return s


def reference_statistics(path: str | os.PathLike) -> dict | None:
    """The precomputed statistics of an ADM reference batch (`VIRTUAL_imagenet256_labeled.npz`: `arr_0`
    images, `mu`/`sigma` of the Inception pool features, `mu_s`/`sigma_s` of the spatial ones), or None
    for an .npz without them or a folder. FID against such a batch uses these statistics, as the ADM
    evaluator does, so it is comparable with published numbers."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        return None
    with np.load(path) as z:
        if "mu" not in z.files and "sigma" not in z.files:
            return None
        if "mu" not in z.files or "sigma" not in z.files:
            raise ValueError(f"{path}: holds only one of mu and sigma; an ADM reference batch holds both")
        stats = {k: z[k].astype(np.float64) for k in ("mu", "sigma", "mu_s", "sigma_s") if k in z.files}
    for m, c in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if m in stats:
            d = stats[m].shape
            if len(d) != 1 or stats.get(c, np.zeros((0, 0))).shape != (d[0], d[0]):
                raise ValueError(f"{path}: {m} {stats[m].shape} and {c} {stats.get(c, np.zeros(0)).shape} are not "
                                 "a mean (D,) and a covariance (D, D)")
    return stats


def fingerprint(path: str | os.PathLike) -> str:
    """Identity of a reference file or folder by content: sizes, mtimes and a sha256 of every byte, so a
    reference replaced under the same name (even with the same size and mtime) is never served stale
    cached features."""
    import hashlib
    path = Path(path)
    h = hashlib.sha256()

    def add(file: str) -> None:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)

    if path.is_file():
        st = path.stat()
        add(str(path))
        return f"file:{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:32]}"
    n, total, newest = 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in sorted(filenames):
            if f.lower().endswith(IMG_EXTENSIONS):
                file = os.path.join(dirpath, f)
                st = os.stat(file)
                n, total, newest = n + 1, total + st.st_size, max(newest, st.st_mtime_ns)
                h.update(os.path.relpath(file, path).encode() + b"\0")
                add(file)
    return f"folder:{n}:{total}:{newest}:{h.hexdigest()[:32]}"
