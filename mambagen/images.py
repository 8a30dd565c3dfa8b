"""Images in and out: tensors <-> uint8, sample grids as PNG, .npz archives (all written atomically)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .io import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] -> (B, H, W, 3) uint8 (NHWC, the ADM .npz layout)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65_500, "WEBP": 16_383}   # what each format can store


def grid_size(n: int, side: int, nrow: int | None = None, pad: int = 2, scale: int = 1) -> tuple[int, int]:
    """(width, height) of `make_grid` for n square images of `side` pixels."""
    nrow = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / nrow)
    return (nrow * (side + pad) + pad) * scale, (rows * (side + pad) + pad) * scale


def check_output(path: str | os.PathLike, size: tuple[int, int] | None = None, kinds=FORMATS) -> Path:
    """Refuse an output path before any work: an unknown extension, a picture too large for its format,
    a folder that cannot be written."""
    path = Path(path)
    if kinds is not None:
        fmt = kinds.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: unsupported image extension {path.suffix or '(none)'} "
                             f"(use {', '.join(kinds)})")
        if size is not None and max(size) > MAX_SIDE[fmt]:
            raise ValueError(f"{path}: a {size[0]}x{size[1]} grid is larger than {fmt} can store "
                             f"({MAX_SIDE[fmt]} pixels a side); use .png, fewer images, a smaller --scale or --nrow")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{path}: cannot be written (is a folder, or {folder} is not a writable folder)")
    return path


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """(B, H, W, 3) uint8 -> one PIL image, `nrow` images per row, white padding."""
    B, H, W, _ = images.shape
    nrow = min(nrow or math.ceil(math.sqrt(B)), B)
    rows = math.ceil(B / nrow)
    canvas = np.full((rows * (H + pad) + pad, nrow * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = img
    grid = Image.fromarray(canvas)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return grid


def add_banner(img: Image.Image, text: str, color=(200, 0, 0)) -> Image.Image:
    """A strip of text above the image (e.g. to label a grid from an untrained model)."""
    lines = text.split("\n")
    out = Image.new("RGB", (max(img.width, 8 * max(len(s) for s in lines) + 8), img.height + 14 * len(lines) + 6), "white")
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, 3 + 14 * i), line, fill=color)
    out.paste(img, (0, 14 * len(lines) + 6))
    return out


def save_image(img: Image.Image, path: str | os.PathLike) -> Path:
    path = check_output(path, img.size)
    fmt = FORMATS[path.suffix.lower()]
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)
    return path


def save_npz(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """ADM-style archive: uint8 NHWC `arr_0` (+ `labels`)."""
    path = Path(path)
    arrays = {"arr_0": images} if labels is None else {"arr_0": images, "labels": labels}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path
