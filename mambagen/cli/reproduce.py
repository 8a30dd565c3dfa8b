"""`mambagen reproduce MODEL --reference REF --num N`: a paper's experiment in one command.

sample-many (the family's fast path; resumable) -> eval against the reference (an ADM batch's mu/sigma give
the FID) -> OUT/report.json and OUT/report.md: our numbers next to the published ones and the setting used.
It composes the `sample-many` and `eval` commands, so each step is also one you can run alone.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .common import FMT, add_sampling_args

SCORES = ("fid", "is", "precision", "recall")


def cmd_reproduce(args) -> None:
    from ..sources import load
    from ..io import atomic_path, read_json
    from . import build_parser

    from ..models.registry import REGISTRY, create_model
    out = Path(args.out)
    if args.model in REGISTRY and not Path(args.model).exists():    # a registered size: random weights
        import torch
        with torch.device("meta"):
            meta = {"config": create_model(args.model).config.to_dict()}
    else:
        meta = load(args.model, with_meta=True)[1]     # resolves official:NAME once (fetch + convert)
    num_classes = meta["config"]["num_classes"]
    if args.num < num_classes:
        raise ValueError(f"--num {args.num} is fewer than the model's {num_classes} classes (one image each at least)")
    per_class = args.num // num_classes
    sampling = [f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items() if k in SAMPLING_FLAGS and v is not None and v is not False]
    sample_argv = ["sample-many", "--model", args.model, "--out", str(out / "samples"), "--per-class", str(per_class),
                   "--batch-size", str(args.batch_size), "--precision", args.precision, *sampling,
                   *(["--device", args.device] if args.device else []), *([] if args.progress else ["--no-progress"])]
    eval_argv = ["eval", "--samples", str(out / "samples" / "samples.npz"), "--reference", args.reference,
                 "--json", str(out / "eval.json"), *(["--inception", args.inception] if args.inception else []),
                 *(["--is-network", args.is_network] if args.is_network else []),
                 *(["--device", args.device] if args.device else []), *([] if args.progress else ["--no-progress"])]
    parser = build_parser()
    t0 = time.time()
    sub = parser.parse_args(sample_argv)
    sub.fn(sub)
    sampled_s = time.time() - t0
    sub = parser.parse_args(eval_argv)
    sub.fn(sub)
    scores = read_json(out / "eval.json")
    spec = read_json(out / "samples" / "meta.json")["spec"]
    report = {"model": args.model, "release": meta.get("release"), "num_samples": per_class * num_classes,
              "sampling": spec["sampling"], "precision": spec.get("precision"), "reference": args.reference,
              "published": meta.get("published"), "published_source": meta.get("published_source"),
              "sampling_source": meta.get("sampling_source"), "ours": _ours(scores), "eval": scores,
              "sampling_seconds_this_run": round(sampled_s, 1),
              "commands": ["mambagen " + " ".join(sample_argv), "mambagen " + " ".join(eval_argv)]}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report_markdown(report))
    print(f"wrote {out / 'report.md'} and report.json")
    print(report_markdown(report).split("\n\n")[1])


def _ours(scores: dict) -> dict:
    s = scores.get("scores", {})
    is_ = scores.get("inception_score", {})
    return {"fid": s.get("fid"), "fid_source": s.get("fid_source"), "precision": s.get("precision"),
            "recall": s.get("recall"), "is": is_.get("inception_score") if is_.get("available") else None,
            "is_reason": None if is_.get("available") else is_.get("reason"), "floor_fid": scores.get("floor", {}).get("fid")}


def report_markdown(r: dict) -> str:
    pub = r.get("published") or {}
    fmt = (lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
    rows = [f"| {k} | {fmt(r['ours'].get(k))} | {fmt(pub.get(k))} |" for k in SCORES]
    return "\n".join([
        f"# Reproducing {r.get('release') or r['model']}",
        "",
        "| score | ours | published |",
        "|---|---|---|",
        *rows,
        "",
        f"{r['num_samples']} samples ({r['precision']}), setting {json.dumps(r['sampling'], sort_keys=True)} "
        f"(source: {r.get('sampling_source') or 'the checkpoint'}); published: {r.get('published_source') or '-'}.",
        f"FID from {r['ours'].get('fid_source')}; the real-vs-real floor is {fmt(r['ours'].get('floor_fid'))}. "
        + (f"IS: {r['ours']['is_reason']}." if r['ours'].get('is_reason') else ""),
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in r["commands"]],
        "",
    ])


SAMPLING_FLAGS = ("cfg", "temperature", "top_k", "top_p", "seed", "steps", "schedule", "cfg_schedule",
                  "cfg_interval", "more_smooth")


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", formatter_class=FMT, help="a paper's experiment: sample N images, score them, report next to "
        "the published numbers",
        description="Sample --num images of MODEL (e.g. official:aim-l, at the published setting unless flags say "
                    "otherwise) with sample-many, score them with eval against --reference (an ADM reference batch "
                    "such as VIRTUAL_imagenet256_labeled.npz: its mu/sigma give the FID, as published), and write "
                    "OUT/report.{json,md} beside the published numbers. Rerunning resumes the sampling. Several GPUs: "
                    "run the printed sample-many command under torchrun first; reproduce then only scores.")
    p.add_argument("model", help="official:NAME, hf:ORG/REPO, 'demo' or a checkpoint directory")
    p.add_argument("--reference", required=True, help="reference images: an ADM batch .npz, an .npz or a folder")
    p.add_argument("--num", type=int, default=50_000, help="images in all (split evenly over the classes)")
    p.add_argument("--out", default=None, help="output folder (default: reproduce/<model name>)")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampling batch")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="the generator's weights while sampling (auto: bf16 on CUDA)")
    p.add_argument("--inception", default=None, help="TorchScript feature network (default: the [fid] extra's)")
    p.add_argument("--is-network", default=None, help="TorchScript logits network for the Inception Score")
    add_sampling_args(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(fn=_with_default_out)


def _with_default_out(args) -> None:
    if args.out is None:
        args.out = str(Path("reproduce") / str(args.model).replace("official:", "").replace("/", "_").replace(":", "_"))
    cmd_reproduce(args)
