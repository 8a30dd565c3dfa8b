"""`mambagen sample` (a grid of class-conditional samples) and `mambagen edit` (zero-shot editing)."""
from __future__ import annotations

import sys
import time

import torch

from ..checkpoint import class_names
from .common import (FMT, UNTRAINED_NOTE, add_model_args, add_sampling_args, check_positive, device_of,
                     load_pipeline, parse_classes, sampling_from)


# ------------------------------------------------------------------------------------------- sample
GRID = 36   # images in the default grid: the README's first command stays a few seconds on a CPU


def default_grid(classes: list[int] | None, per_class: int | None, num_classes: int) -> tuple[list[int], int]:
    """The classes and images per class of a grid where the flags leave them open: every class (GRID spread
    evenly over them for a model of more classes, e.g. ImageNet's 1000), as many images of each as fill GRID."""
    if classes is None:
        classes = (list(range(num_classes)) if num_classes <= GRID else
                   [round(i * (num_classes - 1) / (GRID - 1)) for i in range(GRID)])
    return classes, per_class if per_class is not None else max(1, GRID // len(classes))


def cmd_sample(args) -> None:
    from tqdm.auto import tqdm

    from ..images import add_banner, make_grid, save_image, save_npz, to_uint8
    from ..sample.pipeline import Sampler

    from ..images import check_output, grid_size
    from ..sample.edit import image_size_of
    check_positive(args, "per_class", "batch_size", "scale", "nrow")
    device = device_of(args.device)
    model, tokenizer, meta, untrained = load_pipeline(args, device, registered=True)
    sampling = sampling_from(args, meta.get("sampling"))
    classes, per_class = default_grid(None if args.classes is None else
                                      parse_classes(args.classes, model.config.num_classes, class_names(meta)),
                                      args.per_class, model.config.num_classes)
    nrow = args.nrow or (per_class if per_class > 1 else None)
    n = len(classes) * per_class      # every output is checked before the first token is sampled
    check_output(args.out, grid_size(n, image_size_of(model, tokenizer), nrow, scale=args.scale))
    if args.npz:
        check_output(args.npz, kinds=None)
    sampler = Sampler(model, tokenizer, sampling, fast=False if args.reference or args.progress else None,
                      compile=args.compile)
    labels = torch.tensor([c for c in classes for _ in range(per_class)], device=device)

    rng = torch.Generator(device=device).manual_seed(sampling.seed)
    t0 = time.time()
    images, chunks = [], labels.split(args.batch_size)
    for chunk in tqdm(chunks, desc="sampling", unit="batch", disable=len(chunks) == 1 and not args.progress):
        imgs, _ = sampler.sample(chunk, rng, progress=args.progress)
        images.append(imgs.cpu())
    arr = to_uint8(torch.cat(images))
    dt = time.time() - t0

    if args.npz:   # the samples first: a picture that fails to save must not lose them
        print(f"wrote {save_npz(args.npz, arr, labels.cpu().numpy())} (uint8 NHWC arr_0 + labels)")
    grid = make_grid(arr, nrow=nrow, scale=args.scale)
    if untrained:
        grid = add_banner(grid, UNTRAINED_NOTE if grid.width > 600 else "UNTRAINED: random weights")
        print(f"note: {UNTRAINED_NOTE}", file=sys.stderr)
    out = save_image(grid, args.out)
    print(f"wrote {out} ({len(arr)} images, classes {classes}, cfg {sampling.cfg_scale}, {dt:.1f} s on {device})")


# ------------------------------------------------------------------------------------------- edit
def _region_of(args, size: int):
    """The region to regenerate (size, size) bool from --mask / --mode / --keep."""
    import numpy as np
    from PIL import Image

    from ..sample.edit import border_region
    if args.mask is None:
        if args.mode == "outpaint":
            return border_region(size, args.keep)
        raise ValueError("--mask is required for inpainting (white = regenerate)")
    try:
        mask = Image.open(args.mask).convert("L")
    except (OSError, ValueError) as e:
        raise ValueError(f"{args.mask}: not a readable mask image ({e})") from None
    image_size = Image.open(args.image).size
    if mask.size != image_size and mask.size != (size, size):
        raise ValueError(f"mask {args.mask} is {mask.size[0]}x{mask.size[1]} but the image is "
                         f"{image_size[0]}x{image_size[1]}")
    mask = mask.resize((size, size), Image.NEAREST) if mask.size != (size, size) else mask
    region = torch.from_numpy(np.array(mask) > 127)
    return ~region if args.mode == "outpaint" else region      # the mask marks what to keep when outpainting


def cmd_edit(args) -> None:
    from ..data.folder import load_image
    from ..images import make_grid, save_image, to_uint8
    from ..sample.edit import edit, image_size_of, outpaint_canvas

    from ..images import check_output
    from ..models.registry import family_of
    check_positive(args, "num", "scale")
    check_output(args.out)
    device = device_of(args.device)
    model, tokenizer, meta, untrained = load_pipeline(args, device)
    sampling = sampling_from(args, meta.get("sampling"))
    size = image_size_of(model, tokenizer)
    image = load_image(args.image, size)[None].to(device)                       # (1, 3, S, S)
    classes = parse_classes(args.classes, model.config.num_classes, class_names(meta))
    labels = torch.tensor([classes[i % len(classes)] for i in range(args.num)], device=device)
    rng = torch.Generator(device=device).manual_seed(sampling.seed)
    images = image.expand(args.num, -1, -1, -1)
    if args.canvas:   # a larger canvas around the image (outpainting / resolution expansion)
        out = outpaint_canvas(model, tokenizer, images, labels, args.canvas, sampling, rng, compile=args.compile)
        save_image(make_grid(to_uint8(out), nrow=args.num, scale=args.scale), args.out)
        print(f"wrote {args.out}: {args.num} outpaintings on a {args.canvas}x{args.canvas}-token canvas")
        return
    region = _region_of(args, size).to(device)
    out = edit(model, tokenizer, images, region, labels, sampling, rng, compile=args.compile)
    redrawn = family_of(model).sampler.regenerated(region.cpu(), model.config.grid).to(device)
    if not torch.equal(redrawn, region):   # raster order: everything after the region's first token row
        print(f"note: a {family_of(model).name} model continues the image in raster order, so every row from the "
              f"mask's first token row down is regenerated ({int(redrawn.sum())} of {redrawn.numel()} pixels, not "
              f"the mask's {int(region.sum())}); the region panel shows what changes", file=sys.stderr)
    shown = image.clone()
    shown[:, :, redrawn] = shown[:, :, redrawn] * 0.3 + 0.7   # what is regenerated, greyed out
    grid = make_grid(to_uint8(torch.cat([image, shown, out.to(image.dtype)])), nrow=args.num + 2, scale=args.scale)
    save_image(grid, args.out)
    note = " (UNTRAINED weights)" if untrained else ""
    print(f"wrote {args.out}: original, region, {args.num} edit(s) with classes {labels.tolist()}{note}")


# ------------------------------------------------------------------------------------------- parsers
def add_parsers(subparsers) -> None:
    s = subparsers.add_parser("sample", help="sample a PNG grid (and optionally an .npz) of class-conditional images",
                              formatter_class=FMT,
                              description="Sample images. --model is 'demo' (the AiM + tokenizer trained on the emoji "
                              "demo data, shipped in the package), a checkpoint directory (ours; `mambagen convert` "
                              "makes one from official weights) or a registered name, which is built with RANDOM "
                              "weights (useful to check the pipeline; the grid is labelled untrained). On CUDA each "
                              "family's fast path runs (CUDA graphs; docs/speed.md).")
    add_model_args(s, registered=True)
    s.add_argument("--classes", default=None, help="comma-separated class ids or names (default: every class; "
                   f"{GRID} spread evenly over them for a model of more classes)")
    s.add_argument("--per-class", type=int, default=None,
                   help=f"images per class (default: as many as fill a {GRID}-image grid, at least 1)")
    add_sampling_args(s)
    s.add_argument("--batch-size", type=int, default=32, help="images sampled at once")
    s.add_argument("--out", default="samples.png", help="output grid (.png/.jpg/.webp)")
    s.add_argument("--npz", default=None, help="also write the images as uint8 NHWC .npz (arr_0, labels)")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: per-class)")
    s.add_argument("--scale", type=int, default=2, help="upscale the grid by this integer factor")
    s.add_argument("--progress", action="store_true", help="show a per-token progress bar (reference sampler)")
    s.add_argument("--reference", action="store_true",
                   help="use the readable reference sampling loop on CUDA too (default there: the fast path, "
                        "CUDA graphs built on the first batch; docs/speed.md)")
    s.add_argument("--compile", action="store_true",
                   help="on CUDA, also compile the model's block steps (tens of seconds once; pays over many batches)")
    s.set_defaults(fn=cmd_sample)

    s = subparsers.add_parser("edit", help="zero-shot inpainting / outpainting / class-conditional editing of an image",
                              formatter_class=FMT,
                              description="Regenerate a region of an image and keep the rest. VAR/M-VAR: any region "
                              "(known tokens are teacher-forced at every scale). ARPG: any region (known tokens "
                              "decoded first), and --canvas for outpainting onto a larger grid. AiM/GPT: a bottom "
                              "band, continued from the rows above it. The image is resized/cropped to the model's "
                              "resolution.")
    add_model_args(s, default=None)
    s.add_argument("--image", required=True, help="input image")
    s.add_argument("--mask", default=None, help="mask image of the same size: white = regenerate "
                   "(outpaint: white = keep)")
    s.add_argument("--mode", choices=["inpaint", "outpaint"], default="inpaint",
                   help="inpaint: regenerate the mask; outpaint: keep the mask (or the centre) and regenerate the rest")
    s.add_argument("--keep", type=float, default=0.5, help="outpaint without --mask: centre fraction kept")
    s.add_argument("--canvas", type=int, default=0, help="ARPG: outpaint onto a larger canvas of this many tokens "
                   "a side (resolution expansion); the image stays in the centre")
    s.add_argument("--classes", default=None, help="class id(s) or name(s) for the regenerated region, comma-separated")
    s.add_argument("--num", type=int, default=4, help="number of edits")
    add_sampling_args(s)
    s.add_argument("--compile", action="store_true", help="on CUDA, compile the family's block steps")
    s.add_argument("--scale", type=int, default=2, help="upscale the output grid")
    s.add_argument("--out", default="edit.png", help="output grid: original, region, edits")
    s.set_defaults(fn=cmd_edit)
