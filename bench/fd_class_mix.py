"""Why judge-samples weights the samples to the reference's class mix: real images scored as if they were samples.

    python bench/fd_class_mix.py JUDGE TRAIN_DIR VAL_DIR OUT.json [--per-class 40] [--seeds 0 1 2]

Takes PER_CLASS real training images of every class (what `sample-many --per-class` gives a generator) and
scores them against the val images with `judge_scores`, as judge-samples does: the class-matched FD and
the unweighted one, each over the real-vs-real floor. Real images are what a perfect generator makes, so
a ratio far above 1 measures the comparison, not the images. Also the train split in its own natural mix.
"""
import argparse
import json
import sys

import numpy as np

from mambagen.eval.judge import load_judge
from mambagen.eval.sets import load_image_set
from mambagen.eval.suite import judge_scores
from mambagen.io import atomic_path


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=True)
                                   for c in np.unique(labels)]))


def ratios(j: dict) -> dict:
    out = {"fd_kind": j["fd_kind"], "fd": j["fd"], "fd_floor": j["fd_floor"], "ratio": j["fd"] / j["fd_floor"]}
    if "fd_unmatched" in j:
        out.update(fd_unmatched=j["fd_unmatched"], ratio_unmatched=j["fd_unmatched"] / j["fd_floor"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("judge"), ap.add_argument("train"), ap.add_argument("val"), ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    model, meta = load_judge(args.judge)
    train, val = load_image_set(args.train, progress=False), load_image_set(args.val, progress=False)
    report = {"judge": args.judge, "train": args.train, "val": args.val, "n_val": len(val),
              "per_class": args.per_class, "balanced": {}, "natural_mix_subset": {}}
    for seed in args.seeds:
        balanced = train.subset(per_class_subset(train.labels, args.per_class, seed))
        report["balanced"][seed] = ratios(judge_scores(model, meta, balanced, val, seed=seed))
        # as many images as the balanced set, drawn uniformly: the train split's own mix (close to val's)
        natural = train.subset(np.sort(np.random.default_rng(seed).choice(len(train), len(balanced), replace=False)))
        report["natural_mix_subset"][seed] = ratios(judge_scores(model, meta, natural, val, seed=seed))
        b = report["balanced"][seed]
        print(f"seed {seed}: {args.per_class}/class weighted {b['ratio']:.2f}x, unweighted {b['ratio_unmatched']:.2f}x; "
              f"natural mix {report['natural_mix_subset'][seed]['ratio']:.2f}x", file=sys.stderr)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
