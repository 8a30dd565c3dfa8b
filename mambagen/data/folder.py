"""Class-per-folder image datasets (the ImageNet train layout) with a skip-don't-crash reader.

    root/<class name>/**/<image>.{png,jpg,jpeg,webp,bmp}     (extensions are case-insensitive)

Every image goes through the same transform: RGB (alpha composited on white), shorter side
resized to `image_size`, centre crop to a square, optional horizontal flip, then a (3, S, S)
float32 tensor in [-1, 1].

The resize follows the ADM `center_crop_arr` recipe used to make the ImageNet reference batches
of LlamaGen/AiM (box-halve while the image is at least twice the target, then bicubic), so our
training crops match the FID references pixel for pixel in spirit and closely in value.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# What a broken, truncated or hostile file may raise while PIL opens and decodes it. Deliberately
# not `Exception`: a bug in our own transform should still surface.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_MAX_EXAMPLES = 5


# ------------------------------------------------------------------------------------ transforms
def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL image -> RGB; transparent parts are composited on `background` (white).

    Palette images with a transparency entry and 16/32-bit greyscale are handled too (PIL's
    plain `convert("RGB")` would drop the alpha as black and clip 16-bit values to white).
    """
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # integer/float greyscale: bring to 8 bits by the file's own range, not by clipping
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray((arr.clip(0, top) * (255.0 / top)).round().astype(np.uint8), "L")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side -> `size` (box-halving then bicubic, antialiased), centre crop to size x size."""
    while min(img.size) >= 2 * size:  # cheap, alias-free halving for big downscales
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(max(size, round(x * scale)) for x in img.size), resample=Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image (H, W) -> (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [-1, 1] -> RGB PIL image (values outside [-1, 1] are clipped)."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"tensor_to_pil expects a (3, H, W) tensor, got shape {tuple(x.shape)}")
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), "RGB")


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode one image file as RGB on white; raises a DECODE_ERRORS member if bad.

    `load()` is forced here so truncated files fail now, not later inside a transform.
    """
    if os.path.getsize(path) == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(path) as img:
        img.load()
        if img.width == 0 or img.height == 0:
            raise ValueError(f"zero-size image ({img.width}x{img.height})")
        return to_rgb(img)


def load_image(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """One image file -> (3, image_size, image_size) float32 in [-1, 1] (the dataset transform, no flip).

    Raises ValueError naming the file if it is missing, corrupt or not an image.
    """
    try:
        img = read_rgb(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except DECODE_ERRORS as e:
        raise ValueError(f"{path}: not a readable image ({_reason(e)})") from None
    return pil_to_tensor(resize_center_crop(img, image_size))


def flip_decision(seed: int, epoch: int, index: int) -> bool:
    """The horizontal-flip coin for sample `index` in `epoch`: a pure function of the three ints.

    A hash rather than an RNG stream, so the answer does not depend on worker count, visiting
    order or how far an interrupted epoch got - a resumed run flips exactly as the original would.
    """
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return digest[0] & 1 == 1


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# ------------------------------------------------------------------------------------ dataset
class ImageFolder(torch.utils.data.Dataset):
    """root/<class>/**/<image> -> ((3, S, S) float32 in [-1, 1], label); label = index in `classes`.

    Bad files never crash an epoch: `ds[i]` falls through to i+1, i+2, ... (wrapping) until a
    readable image, and counts the skip (see `skipped_report`). Call `scan()` first to drop bad
    files up front instead (the indices then shift, so scan before training, not during).

    Random flips (`random_flip=True`) are drawn by `flip_decision(seed, epoch, index)` - no global
    RNG is touched. Call `set_epoch(epoch)` at the start of every epoch so flips change between
    epochs; resuming at epoch e then reproduces the original flips exactly. With DataLoader
    `persistent_workers=True` the workers keep their own copy of the dataset and would miss
    `set_epoch`, so use non-persistent workers (the default) with random flips.

    Skip counters are per process: each DataLoader worker counts what it read.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, random_flip: bool = False,
                 extensions=IMG_EXTENSIONS, *, seed: int = 0):
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.random_flip = random_flip
        self.extensions = tuple(e.lower() for e in extensions)
        self.seed, self.epoch = int(seed), 0
        self.classes, self.samples, self.empty_classes, self.links_skipped = _index_folder(self.root, self.extensions)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self._bad: dict[int, str] = {}     # sample index -> reason, remembered so bad files are read once
        self._fallbacks = 0                # __getitem__ calls served by a neighbour
        self._dropped: list[tuple[str, str]] = []  # (path, reason) removed by scan()
        self._scanned = False

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Select the flips of `epoch` (and optionally change the seed)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.samples)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        i %= n
        for step in range(n):
            j = (i + step) % n
            img = self._read(j)
            if img is not None:
                self._fallbacks += step > 0
                x = pil_to_tensor(resize_center_crop(img, self.image_size))
                if self.random_flip and flip_decision(self.seed, self.epoch, i):  # coin of the asked index
                    x = x.flip(-1)
                return x, self.samples[j][1]
        raise RuntimeError(f"{self.root}: none of the {n} images could be read; see skipped_report()")

    def _read(self, j: int) -> Image.Image | None:
        """Decoded RGB image of sample j, or None (recorded) if it is unreadable."""
        if j in self._bad:
            return None
        try:
            return read_rgb(self.samples[j][0])
        except DECODE_ERRORS as e:
            self._bad[j] = _reason(e)
            return None

    def scan(self, progress: bool = True, num_threads: int = 8) -> dict:
        """Decode every file once (tqdm bar), drop the unreadable ones, return `skipped_report()`."""
        from tqdm.auto import tqdm

        def check(sample):
            try:
                read_rgb(sample[0])
                return None
            except DECODE_ERRORS as e:
                return _reason(e)

        with ThreadPoolExecutor(max(1, num_threads)) as pool:  # PIL decoders release the GIL
            reasons = list(tqdm(pool.map(check, self.samples), total=len(self.samples), unit="img",
                                desc=f"scanning {self.root.name}", disable=not progress))
        keep = [s for s, r in zip(self.samples, reasons) if r is None]
        self._dropped += [(s[0], r) for s, r in zip(self.samples, reasons) if r is not None]
        if not keep:
            raise ValueError(f"{self.root}: none of the {len(self.samples)} images could be read "
                             f"(first: {self._dropped[0][0]}: {self._dropped[0][1]})")
        self.samples, self._bad, self._scanned = keep, {}, True
        return self.skipped_report()

    def skipped_report(self) -> dict:
        """What was skipped in this process so far.

        skipped: distinct bad files (dropped by scan() or met while reading); fallbacks: items
        served by a neighbour; reasons: {reason: count}; examples: up to 5 {path, reason}.
        """
        bad = self._dropped + [(self.samples[j][0], r) for j, r in sorted(self._bad.items())]
        return {
            "root": str(self.root),
            "samples": len(self.samples),
            "scanned": self._scanned,
            "skipped": len(bad),
            "dropped_by_scan": len(self._dropped),
            "fallbacks": self._fallbacks,
            "reasons": dict(Counter(r for _, r in bad)),
            "examples": [{"path": p, "reason": r} for p, r in bad[:_MAX_EXAMPLES]],
            "empty_classes": list(self.empty_classes),
            "links_skipped": len(self.links_skipped),
            "link_examples": [{"path": p, "reason": r} for p, r in self.links_skipped[:_MAX_EXAMPLES]],
        }

    def __repr__(self) -> str:
        return (f"ImageFolder({str(self.root)!r}, image_size={self.image_size}, "
                f"random_flip={self.random_flip}, {len(self.classes)} classes, {len(self)} images)")


def _index_folder(root: Path, extensions: tuple[str, ...]):
    """(sorted class names, [(path, label)] sorted by path, empty class names, skipped links) for a
    class-per-folder tree.

    Links are followed the way a symlink farm needs (a class folder or an image may link anywhere), but
    each real file is counted once, and a folder link inside a class that leads out of it (or around, back
    into itself) is not entered: a link loop cannot multiply files or move them into another class.
    Empty class folders keep their label, so train/ and val/ trees with the same folders agree on
    the class ids even if one of them lacks images for some class.
    """
    if not root.exists():
        raise ValueError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise ValueError(f"{root}: is not a folder (expected root/<class>/<images>)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: has no class sub-folders (expected root/<class>/<images>)")
    found, skipped = [], []     # (path, label, real path, lives where it appears?)
    for label, name in enumerate(classes):
        top = os.path.realpath(root / name)
        visited = {top}
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            keep = []
            for d in sorted(d for d in dirnames if not d.startswith(".")):   # hidden: .git, .ipynb...
                real = os.path.realpath(os.path.join(dirpath, d))
                if real in visited or os.path.commonpath([real, top]) != top:
                    skipped.append((os.path.join(dirpath, d), "folder link out of its class folder or in a loop"))
                else:
                    visited.add(real)
                    keep.append(d)
            dirnames[:] = keep
            for f in filenames:
                if not f.startswith(".") and f.lower().endswith(extensions):
                    path = os.path.join(dirpath, f)
                    real = os.path.realpath(path)
                    found.append((path, label, real, real == os.path.join(top, os.path.relpath(path, root / name))))
    # each real file once: where it lives rather than where a link to it sits
    owner = {}
    for i, (_, _, real, direct) in enumerate(found):
        if real not in owner or (direct and not found[owner[real]][3]):
            owner[real] = i
    per_class: dict[int, list[str]] = {}
    for i, (path, label, real, _) in enumerate(found):
        if owner[real] == i:
            per_class.setdefault(label, []).append(path)
        else:
            skipped.append((path, "a link to an image already counted"))
    samples = [(p, label) for label in range(len(classes)) for p in sorted(per_class.get(label, []))]
    empty = [name for label, name in enumerate(classes) if label not in per_class]
    if not samples:
        raise ValueError(f"{root}: no images with extensions {', '.join(extensions)} in its "
                         f"{len(classes)} class folder(s)")
    return classes, samples, empty, skipped


def describe_skipped(report: dict) -> str:
    """One line for what a scan left out (`ImageFolder.skipped_report()`)."""
    parts = []
    if report.get("skipped"):
        reasons = ", ".join(f"{n} {r}" for r, n in report["reasons"].items())
        parts.append(f"{report['skipped']} unreadable image(s) left out ({reasons}; e.g. "
                     f"{report['examples'][0]['path']})")
    if report.get("links_skipped"):
        parts.append(f"{report['links_skipped']} link(s) not followed (e.g. {report['link_examples'][0]['path']}: "
                     f"{report['link_examples'][0]['reason']})")
    return f"{report['root']}: " + "; ".join(parts) if parts else f"{report['root']}: every image readable"
