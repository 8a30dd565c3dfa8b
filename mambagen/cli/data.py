"""`mambagen data emoji` (the demo dataset) and `mambagen tokenize` (images -> token shards)."""
from __future__ import annotations

import argparse
import time


from ..data.emoji import ALL_STYLES, META_PACKAGE, STYLE_PACKAGES, STYLES, VERSION, default_cache_dir
from .common import FMT, add_run_args, device_of


def data_subparsers(subparsers) -> argparse._SubParsersAction:
    """The nested subcommands of `mambagen data`, created on first use so other modules can add theirs."""
    parser = subparsers.choices.get("data")
    if parser is None:
        parser = subparsers.add_parser("data", help="build datasets (mambagen data emoji ...)",
                                       description="Build training datasets in the class-per-folder layout.")
        return parser.add_subparsers(dest="data_command", required=True, metavar="DATASET")
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def add_emoji(subparsers) -> None:
    """`mambagen data emoji ROOT ...`."""
    p = data_subparsers(subparsers).add_parser(
        "emoji", help="the built-in demo dataset: 9 emoji categories (or their subcategories), Google + Twitter art, 64x64",
        formatter_class=FMT,
        description=f"Build ROOT/{{train,val}}/<class>/<name>_<style>.png from the npm packages {META_PACKAGE}, "
                    f"{', '.join(STYLE_PACKAGES.values())} (emoji-datasource {VERSION}; fetched with npm into "
                    "--cache and sha512-verified, reused offline afterwards). Classes are the emoji categories "
                    "except Component (or, with --level subcategory, their subcategories); base emoji only; images "
                    "composited on white. About --val-fraction of each class goes to val/, every style of one emoji "
                    "on the same side. Also writes ROOT/NOTICE (image licenses: Noto Emoji Apache-2.0, Twemoji "
                    "CC-BY 4.0, Fluent Emoji 3D and Flat MIT) and ROOT/stats.json.")
    p.add_argument("root", metavar="ROOT", help="output folder (built beside it, then renamed into place)")
    p.add_argument("--size", type=int, choices=(64, 32), default=64, help="image side in pixels")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of each class's emoji held out in val/")
    p.add_argument("--styles", default=",".join(STYLES), help=f"comma-separated art styles to include, of "
                   f"{', '.join(ALL_STYLES)} (fluent: Microsoft's Fluent Emoji 3D, MIT; fluent-flat: its flat "
                   "vector art, MIT, rendered by the resvg-py wheel: pip install 'mambagen[svg]')")
    p.add_argument("--cache", default=str(default_cache_dir()), help="folder caching the verified npm tarballs")
    p.add_argument("--skin-tones", action="store_true", help="also include skin-tone variants (same split as "
                   "their base emoji)")
    p.add_argument("--level", choices=["category", "subcategory"], default="category",
                   help="classes: the 9 categories, or the finer subcategories (mammals, fruit, country flags, ...)")
    p.add_argument("--min-emoji", type=int, default=12, help="with --level subcategory: a subcategory with fewer "
                   "base emoji joins its category's <category>_other class")
    p.add_argument("--no-other", action="store_true", help="with --level subcategory: leave the pooled "
                   "<category>_other classes out, so every class is one named subcategory")
    p.add_argument("--force", action="store_true", help="replace ROOT if it holds an earlier emoji build")
    p.set_defaults(fn=cmd_emoji)


def cmd_emoji(args) -> None:
    from ..data.emoji import build_emoji_dataset, format_summary
    t0 = time.time()
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    stats = build_emoji_dataset(args.root, size=args.size, val_fraction=args.val_fraction, styles=styles,
                                cache_dir=args.cache, force=args.force, include_variations=args.skin_tones,
                                level=args.level, min_emoji=args.min_emoji, drop_other=args.no_other)
    print(format_summary(stats))
    print(f"wrote {args.root} ({stats['totals']['train']} train + {stats['totals']['val']} val images, "
          f"{args.size}x{args.size}) in {time.time() - t0:.1f} s")


def add_tokenize(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize", help="encode an image folder once into token shards for generator training",
        formatter_class=FMT,
        description="Encode every image of an ImageFolder (one sub-folder per class) with a trained tokenizer "
                    "into compact shards of token ids + labels, so generator training never runs the encoder.")
    p.add_argument("--data", required=True, help="image folder (class per sub-folder), e.g. emoji64/train")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (e.g. runs/vq/tokenizer)")
    p.add_argument("--out", required=True, help="output directory for the shards")
    p.add_argument("--image-size", type=int, default=None, help="resize/crop size (default: the tokenizer's)")
    p.add_argument("--flip", action="store_true", help="also store the horizontally flipped version of each image")
    p.add_argument("--augment", type=int, default=0, help="also store this many small scale/shift copies of each "
                   "image (no mirror: keeps text and arrows readable); training draws one view per epoch")
    p.add_argument("--batch-size", type=int, default=64, help="images encoded at once")
    p.add_argument("--shard-size", type=int, default=65536, help="images per shard")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes reading images")
    add_run_args(p)
    p.set_defaults(fn=_cmd_tokenize)


def _cmd_tokenize(args) -> None:
    from ..checkpoint import load_tokenizer
    from ..data.folder import ImageFolder, describe_skipped
    from ..data.tokens import tokenize_dataset
    from ..io import read_json

    if args.augment < 0:
        raise ValueError(f"--augment must be >= 0, got {args.augment}")
    device = device_of(args.device)
    tok = load_tokenizer(args.tokenizer, device)
    size = args.image_size or tok.config.image_size
    ds = ImageFolder(args.data, size)
    ds.scan(progress=args.progress)   # verify every file first: a bad one is dropped, not replaced by a duplicate of its neighbour
    out = tokenize_dataset(tok, ds, args.out, batch_size=args.batch_size, flip=args.flip, augment=args.augment,
                           shard_size=args.shard_size, device=device, num_workers=args.num_workers,
                           progress=args.progress)
    meta = read_json(out / "meta.json")
    views = 1 + args.flip + args.augment
    print(f"wrote {meta['num_samples']} images x {views} view{'s' if views > 1 else ''} of {meta['num_tokens']} "
          f"tokens ({len(meta['shards'])} shard(s)) to {out}")
    report = ds.skipped_report()
    if report.get("skipped") or report.get("links_skipped"):
        print(describe_skipped(report))


def add_parsers(subparsers) -> None:
    add_emoji(subparsers)
    add_tokenize(subparsers)
