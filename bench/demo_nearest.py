"""Does a demo generator copy its training images? Each sample's distance to its nearest training image,
against two yardsticks measured the same way:

    python bench/demo_nearest.py --train TRAIN_DIR --val VAL_DIR --tokenizer TOK --out OUT.json \\
        NAME=samples.npz [NAME=samples.npz ...]

* new emoji: every val image's distance to its nearest training image. The split keeps all art styles
  and variants of one emoji on one side, so this is how far an emoji the model never saw sits.
* a copy: a training image's distance to its own tokenizer reconstruction, the closest a generator that
  reproduces that image token for token can come. A sample within the 90th percentile of these is
  counted as a near-copy.

The distance is the RMS difference of the 64x64 RGB pixels in [0, 1]. Per generator: the median
distance, the share of near-copies, both per class, and the share of samples nearer to the training
set than the median new emoji.
"""
import argparse
import json
import sys

import numpy as np
import torch

from mambagen.eval.sets import load_image_set
from mambagen.io import atomic_path


def flat(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, H*W*3) in [0, 1]."""
    return torch.from_numpy(images).reshape(len(images), -1).float() / 255.0


def nearest_rms(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(Q, D), (B, D) -> (Q,) RMS distance of each query to its nearest row of the bank."""
    bank_sq = (bank * bank).sum(1)
    out = []
    for q in queries.split(chunk):
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + bank_sq   # (q, B) squared distances
        out.append(d2.min(1).values.clamp_min(0))
    return (torch.cat(out) / queries.shape[1]).sqrt()


def reconstruction_rms(tokenizer_dir: str, images: np.ndarray) -> torch.Tensor:
    """(N,) RMS distance of images to their tokenizer reconstructions."""
    from mambagen.checkpoint import load_tokenizer
    from mambagen.eval.model_metrics import tokenizer_metrics
    _, recons = tokenizer_metrics(load_tokenizer(tokenizer_dir), images, progress=False)
    return ((flat(images) - flat(recons)) ** 2).mean(1).sqrt()


def summary(dist: torch.Tensor, labels: np.ndarray, names: list[str], copy_at: float, new_median: float) -> dict:
    per_class = {}
    for c in np.unique(labels):
        d = dist[torch.from_numpy(labels == c)]
        per_class[names[c] if c < len(names) else str(c)] = {
            "median": d.median().item(), "near_copies": (d <= copy_at).float().mean().item()}
    return {"n": len(dist), "median": dist.median().item(), "near_copies": (dist <= copy_at).float().mean().item(),
            "nearer_than_median_new_emoji": (dist < new_median).float().mean().item(), "per_class": per_class}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="the image folder the generator was trained on")
    ap.add_argument("--val", required=True, help="held-out images (other emoji)")
    ap.add_argument("--tokenizer", required=True, help="the generator's tokenizer")
    ap.add_argument("--copies-from", type=int, default=1000, help="training images reconstructed for the copy yardstick")
    ap.add_argument("--out", required=True)
    ap.add_argument("samples", nargs="+", help="NAME=samples.npz (mambagen sample-many)")
    args = ap.parse_args()
    train, val = load_image_set(args.train, progress=False), load_image_set(args.val, progress=False)
    bank = flat(train.images)
    new = nearest_rms(flat(val.images), bank)
    pick = np.sort(np.random.default_rng(0).choice(len(train), min(args.copies_from, len(train)), replace=False))
    copy = reconstruction_rms(args.tokenizer, train.images[pick])
    copy_at, new_median = torch.quantile(copy, 0.9).item(), new.median().item()
    report = {"train": args.train, "n_train": len(train), "val": args.val, "distance": "RMS of RGB pixels in [0, 1]",
              "copy_yardstick": {"n": len(copy), "median": copy.median().item(), "p90 (near-copy threshold)": copy_at},
              "new_emoji": summary(new, val.labels, val.classes, copy_at, new_median), "generators": {}}
    print(f"a copy (train vs its reconstruction): median {copy.median():.4f}, near-copy below {copy_at:.4f}; "
          f"a new emoji (val vs train): median {new_median:.4f}, {report['new_emoji']['near_copies']:.3f} near-copies",
          file=sys.stderr)
    for item in args.samples:
        name, path = item.split("=", 1)
        s = load_image_set(path, progress=False)
        r = report["generators"][name] = {"samples": path, **summary(nearest_rms(flat(s.images), bank), s.labels,
                                                                     train.classes, copy_at, new_median)}
        print(f"{name}: median {r['median']:.4f}, near-copies {r['near_copies']:.3f}, nearer than the median new "
              f"emoji {r['nearer_than_median_new_emoji']:.3f}", file=sys.stderr)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
