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


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """(B, H, W, 3) uint8 -> one PIL image, `nrow` images per row, white padding."""
    B, H, W, _ = images.shape
    nrow = nrow or math.ceil(math.sqrt(B))
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
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image extension (use .png, .jpg or .webp)")
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
