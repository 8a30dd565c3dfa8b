"""Evaluation subcommands: sample-many, eval, eval-nll, eval-tokenizer, train-judge, judge-samples.

Handlers load, call the library functions of `mambagen.eval` and print; the library never prints.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..sources import resolve
from ..checkpoint import class_names
from ..sample.pipeline import precision_name
from .common import (FMT, add_model_args, add_run_args, add_sampling_args, device_of, load_pipeline, parse_classes,
                     sampling_from)



def _load_pipeline(model_dir: str, tokenizer_dir: str | None, device, ema: bool):
    """(generator, tokenizer or None) from a checkpoint directory (+ an explicit tokenizer directory)."""
    from ..checkpoint import Pipeline, load, load_tokenizer

    obj = load(model_dir, device=device, ema=ema)
    if isinstance(obj, Pipeline):
        generator, tokenizer = obj.generator, obj.tokenizer
    elif isinstance(obj, torch.nn.Module) and not _is_tokenizer(obj):
        generator, tokenizer = obj, None
    else:
        raise ValueError(f"{model_dir}: holds a tokenizer, not a generator")
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(tokenizer_dir, device)
    return generator, tokenizer


def _is_tokenizer(obj) -> bool:
    from ..tokenizers import KINDS
    return any(isinstance(obj, kind.model) for kind in KINDS.values())


def _write_json(path: str | None, report: dict) -> None:
    if path:
        from ..io import write_json
        write_json(path, report)
        print(f"wrote {path}")


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------------ sample-many
def _cmd_sample_many(args) -> None:
    from ..train.dist import barrier, cleanup, init_distributed
    from ..eval.sample_many import SampleSpec, check_meta, pack_samples, sample_shard, write_pngs

    info = init_distributed(args.device)
    try:
        generator, tokenizer, meta, untrained = load_pipeline(args, info.device, registered=True)
        if untrained and info.main:
            print(f"note: {args.model} has RANDOM weights (a registered size): for timing the pipeline, not FID")
        sampling = sampling_from(args, meta.get("sampling"))
        classes = parse_classes(args.classes, generator.config.num_classes, class_names(meta))
        where = args.model if untrained else str(resolve(args.model).resolve())
        spec = SampleSpec(tuple(classes), args.per_class, sampling, where, args.ema,
                          precision=precision_name(generator))
        check_meta(args.out, spec, write=info.main)
        t0 = time.time()
        n_new = sample_shard(generator, tokenizer, spec, args.out, rank=info.rank, world=info.world,
                             batch_size=args.batch_size, device=info.device, progress=args.progress and info.main,
                             fast=False if args.reference else None, compile=args.compile)
        dt = time.time() - t0
        barrier(info)
        if info.main:
            path = pack_samples(args.out, spec)
            rate = f", {n_new / dt:.2f} img/s on rank 0 ({info.device})" if n_new else " (all shards already there)"
            print(f"rank 0 sampled {n_new} new images in {dt:.1f} s{rate}; world size {info.world}")
            s = sampling
            print(f"wrote {path}: {spec.num_samples} images ({len(classes)} classes x {args.per_class}), "
                  f"cfg {s.cfg_scale}, temperature {s.temperature}, top-k {s.top_k}, top-p {s.top_p}, seed {s.seed}")
            print(f"wrote {Path(args.out) / 'preview.png'}")
            if args.png_dir:
                n_png = write_pngs(path, args.png_dir, progress=args.progress)
                print(f"wrote {n_png} PNGs to {args.png_dir} (<index>_<label>.png)")
    finally:
        cleanup(info)


# ------------------------------------------------------------------------------------ eval
def _inception_or_none(path, needed: bool):
    """(network file, None) or (None, reason); raises when the network is required."""
    from ..eval.inception import InceptionUnavailable, find_inception
    try:
        return find_inception(path), None
    except InceptionUnavailable as e:
        if needed:
            raise
        return None, str(e)


def _score_kwargs(args, device) -> dict:
    return dict(k=args.k, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, device=device)


def _print_scores(scores: dict, floor: dict) -> None:
    print(f"  {'':<18} {'FID':>9} {'KID x1e3 (std)':>17} {'precision':>10} {'recall':>8} {'n real/fake':>12}")
    for name, s in (("samples vs ref", scores), ("floor", floor)):
        kid_s = f"{s['kid'] * 1e3:.2f} ({s['kid_std'] * 1e3:.2f})"
        print(f"  {name:<18} {s['fid']:>9.2f} {kid_s:>17} {s['precision']:>10.3f} {s['recall']:>8.3f} "
              f"{s['n_real']:>5}/{s['n_fake']:<6}")
    print(f"  floor = real vs real: {floor['kind']}")


def _print_judge(j: dict, judge_dir: str) -> None:
    print(f"judge ({judge_dir}; its own val accuracy {_fmt(j['judge_val_accuracy'])}):")
    if "sample_accuracy" in j:
        print(f"  class accuracy of {j['n_samples']} labelled samples: {j['sample_accuracy']:.3f}"
              + (f"   (reference images: {j['reference_accuracy']:.3f})" if "reference_accuracy" in j else ""))
        real = j.get("reference_per_class_accuracy", {})
        print("  per class, samples (real): " + ", ".join(
            f"{k} {v:.2f}" + (f" ({real[k]:.2f})" if k in real else "") for k, v in j["per_class_accuracy"].items()))
    print(f"  Fréchet distance in judge features: {j['fd']:.3f}   floor {j['fd_floor']:.3f} "
          f"(real vs real: {j['floor_kind']})")
    print(f"  the FD: {j['fd_kind']}" + (f"; unweighted {j['fd_unmatched']:.3f}" if "fd_unmatched" in j else ""))


def _cmd_eval(args) -> None:
    from ..eval.inception import describe_network, load_network, run_network
    from ..eval.sets import load_image_set
    from ..eval.suite import (distribution_scores, floor_scores, inception_score_of, reference_batch_fid,
                              reference_features)

    device = device_of(args.device)
    progress = args.progress
    net_path, why = _inception_or_none(args.inception, needed=args.judge is None)
    samples = load_image_set(args.samples, args.image_size, progress=progress)
    report = {"samples": {"path": str(args.samples), "count": len(samples), "image_size": list(samples.image_size),
                          "labelled": samples.labels is not None},
              "reference": {"path": str(args.ref), "limit": args.ref_limit}, "seed": args.seed}
    print(f"samples   : {args.samples}  (n = {len(samples)}, {samples.image_size[0]}x{samples.image_size[1]}"
          f"{', labelled' if samples.labels is not None else ''})")

    if net_path is not None:
        network = describe_network(net_path)
        net = load_network(net_path, device)
        report["network"] = network
        feats = run_network(net, samples.images, args.batch_size, device, progress, desc="sample features")
        ref_feats, ref_info = reference_features(args.ref, net, network["sha1"], cache=args.ref_cache,
                                                 image_size=args.image_size, limit=args.ref_limit, seed=args.seed,
                                                 batch_size=args.batch_size, device=device, progress=progress)
        report["reference"].update(ref_info)
        floor_feats = None
        if args.floor_ref:
            floor_feats, floor_info = reference_features(args.floor_ref, net, network["sha1"],
                                                         image_size=args.image_size, seed=args.seed,
                                                         batch_size=args.batch_size, device=device, progress=progress)
            report["floor_ref"] = {"path": str(args.floor_ref), **floor_info}
        kw = _score_kwargs(args, device)
        report["scores"] = distribution_scores(ref_feats, feats, seed=args.seed, **kw)
        report["scores"].update(reference_batch_fid(args.ref, feats, report["scores"]["fid"]))
        report["floor"] = floor_scores(ref_feats, len(samples), floor_ref=floor_feats, seed=args.seed, **kw)
        report["settings"] = {"k": args.k, "kid_subsets": args.kid_subsets, "kid_subset_size": args.kid_subset_size}
        cache_note = "read from cache" if ref_info["cache_hit"] else \
            ("cached" if ref_info["cache_written"] else "NOT cached: location not writable, use --ref-cache")
        print(f"reference : {args.ref}  (n = {ref_info['count']}; features {cache_note}: {ref_info['cache']})")
        print(f"network   : {network['name']} (sha1 {network['sha1'][:12]})")
        print(f"FID from  : {report['scores']['fid_source']}")
        _print_scores(report["scores"], report["floor"])
    else:
        report["inception"] = {"available": False, "reason": why}
        print(f"FID/KID/precision/recall: unavailable ({why})")

    if args.is_network:
        report["inception_score"] = inception_score_of(load_network(args.is_network, device), samples.images,
                                                       args.batch_size, device, progress)
        s = report["inception_score"]
        print(f"Inception Score: {s['inception_score']:.2f} ± {s['inception_score_std']:.2f} ({s['n']} samples)")
    else:
        report["inception_score"] = {"available": False, "reason": "needs a logits network: --is-network PATH "
                                     "(the [fid] extra's network gives pool features only)"}
        print("Inception Score: unavailable (needs --is-network PATH, a TorchScript network giving class logits)")

    if args.judge:
        report["judge"] = _judge_report(args, samples, device)
        _print_judge(report["judge"], args.judge)
    _write_json(args.json, report)


def _judge_report(args, samples, device) -> dict:
    from ..eval.judge import load_judge
    from ..eval.sets import load_image_set
    from ..eval.suite import judge_scores

    model, meta = load_judge(args.judge, device)
    ref = load_image_set(args.ref, args.image_size, getattr(args, "ref_limit", None), args.seed, args.progress)
    floor_set = load_image_set(args.floor_ref, args.image_size, progress=args.progress) if args.floor_ref else None
    return {"path": str(args.judge), **judge_scores(model, meta, samples, ref, floor_set=floor_set, seed=args.seed,
                                                    device=device)}


# ------------------------------------------------------------------------------------ judge
def _cmd_train_judge(args) -> None:
    from ..eval.judge import JudgeConfig, JudgeTraining, save_judge, train_judge
    from ..eval.sets import load_image_set

    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    train = load_image_set(args.data, args.image_size, progress=args.progress)
    if train.labels is None:
        raise ValueError(f"{args.data}: the judge needs class sub-folders (root/<class>/<image>)")
    val = load_image_set(args.val_data, train.image_size[0], progress=args.progress) if args.val_data else None
    if val is not None and val.classes != train.classes:
        raise ValueError(f"class folders differ: {args.data} has {train.classes}, {args.val_data} has {val.classes}")
    config = JudgeConfig(num_classes=len(train.classes), image_size=train.image_size[0],
                         widths=tuple(int(w) for w in args.widths.split(",")), classes=train.classes)
    opts = JudgeTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    model, report = train_judge(train.images, train.labels, None if val is None else val.images,
                                None if val is None else val.labels, config, opts, device, args.progress)
    report.update(train_data=str(args.data), val_data=args.val_data, n_train=len(train),
                  n_val=None if val is None else len(val))
    out = save_judge(model, args.out, report)
    print(f"judge: {report['params']:,} parameters, {len(train.classes)} classes, {len(train)} training images, "
          f"{opts.epochs} epochs in {report['train_time_s']:.0f} s on {device} ({report['torch_threads']} threads)")
    print(f"  train accuracy {report['train_accuracy']:.3f}   val accuracy {_fmt(report['val_accuracy'])}"
          + (f" on {len(val)} images (chance {1 / len(train.classes):.3f})" if val is not None else ""))
    print(f"wrote {out}")


def _cmd_judge_samples(args) -> None:
    from ..eval.sets import load_image_set

    device = device_of(args.device)
    samples = load_image_set(args.samples, args.image_size, progress=args.progress)
    report = {"samples": {"path": str(args.samples), "count": len(samples)},
              "judge": _judge_report(args, samples, device)}
    _print_judge(report["judge"], args.judge)
    _write_json(args.json, report)


# ------------------------------------------------------------------------------------ eval-nll
def _cmd_eval_nll(args) -> None:
    import math

    from ..data.tokens import TokenDataset
    from ..train.dist import cleanup, init_distributed
    from ..eval.model_metrics import heldout_bits_per_class, heldout_bits_per_token

    info = init_distributed(args.device)
    try:
        model, tokenizer = _load_pipeline(args.model, args.tokenizer, info.device, args.ema)
        from ..models.registry import family_of
        from ..train.loop import training_quantizer
        family = family_of(model)
        quantizer = training_quantizer(family, tokenizer) if family.needs_quantizer and tokenizer is not None else None
        data = TokenDataset(args.data)
        opts = dict(batch_size=args.batch_size, quantizer=quantizer, precision=args.precision)
        if data.num_classes > 1:      # one pass, class by class: each class and the whole
            per_class, bpt, used = heldout_bits_per_class(model, data, info, **opts)
        else:
            per_class, bpt = {}, heldout_bits_per_token(model, data, info, **opts)
            used = len(data) - len(data) % info.world
        if info.main:
            report = {"model": str(args.model), "data": str(args.data), "ema": args.ema, "bits_per_token": bpt,
                      "nats_per_token": bpt * math.log(2), "perplexity": 2 ** bpt,
                      "bits_per_image": bpt * data.num_tokens, "sequences": used,
                      "tokens_per_sequence": data.num_tokens,
                      "vocab_size": data.vocab_size, "uniform_bits_per_token": math.log2(data.vocab_size),
                      "precision": args.precision, "world_size": info.world}
            if per_class:    # every class alike, beside the split's own mix above
                report["class_mean_bits_per_token"] = sum(per_class.values()) / len(per_class)
                report["per_class_bits_per_token"] = per_class
            print(f"{bpt:.4f} bits/token (perplexity {2 ** bpt:.1f}; uniform: {math.log2(data.vocab_size):.2f}) "
                  f"on {used} held-out sequences x {data.num_tokens} tokens of {args.data}"
                  + (f"; {report['class_mean_bits_per_token']:.4f} averaged over its {len(per_class)} classes"
                     if per_class else ""))
            _write_json(args.json, report)
    finally:
        cleanup(info)


# ------------------------------------------------------------------------------------ eval-tokenizer
def _cmd_eval_tokenizer(args) -> None:
    from ..checkpoint import Pipeline, load
    from ..eval.inception import describe_network, load_network, run_network
    from ..eval.model_metrics import tokenizer_metrics
    from ..eval.sets import load_image_set
    from ..eval.suite import distribution_scores, floor_scores

    device = device_of(args.device)
    obj = load(args.tokenizer, device=device)
    tokenizer = obj.tokenizer if isinstance(obj, Pipeline) else obj
    if not _is_tokenizer(tokenizer):
        raise ValueError(f"{args.tokenizer}: holds a generator without a tokenizer")
    judge = None
    if args.judge:   # loaded first: a bad --judge fails before the images are read and reconstructed
        from ..eval.judge import load_judge
        judge, _ = load_judge(args.judge, device)
    size = args.image_size or tokenizer.config.image_size
    images = load_image_set(args.data, size, limit=args.limit, seed=args.seed, progress=args.progress)
    metrics, recons = tokenizer_metrics(tokenizer, images.images, batch_size=args.batch_size, device=device,
                                        progress=args.progress)
    report = {"tokenizer": str(args.tokenizer), "data": str(args.data), "image_size": list(images.image_size),
              **metrics}
    print(f"{metrics['n']} images of {args.data} at {images.image_size[0]}x{images.image_size[1]}:")
    print(f"  PSNR {metrics['psnr']:.2f} dB (std {metrics['psnr_std']:.2f})   SSIM {metrics['ssim']:.4f} "
          f"(std {metrics['ssim_std']:.4f})   codebook usage {metrics['codebook_usage']:.3f} of "
          f"{metrics['codebook_size']} codes")
    net_path, why = _inception_or_none(args.inception, needed=False)
    if net_path is None:
        report["rfid"] = {"available": False, "reason": why}
        print(f"  rFID: unavailable ({why})")
    else:
        net = load_network(net_path, device)
        real = run_network(net, images.images, args.inception_batch_size, device, args.progress, desc="real features")
        rec = run_network(net, recons, args.inception_batch_size, device, args.progress, desc="recon features")
        kw = dict(k=3, device=device)
        scores = distribution_scores(real, rec, seed=args.seed, **kw)
        floor = floor_scores(real, len(rec), seed=args.seed, **kw)
        report["rfid"] = {"available": True, "network": describe_network(net_path), **scores, "floor": floor}
        print(f"  rFID {scores['fid']:.2f} (KID x1e3 {scores['kid'] * 1e3:.2f}) on {len(rec)} reconstructions; "
              f"floor {floor['fid']:.2f} (real vs real: {floor['kind']})")
    if judge is not None:
        from ..eval.suite import judge_reconstruction_fd
        report["judge_fd"] = {"judge": str(args.judge), **judge_reconstruction_fd(judge, images.images, recons,
                                                                                  seed=args.seed, device=device)}
        j = report["judge_fd"]
        print(f"  Fréchet distance in judge features {j['fd']:.3f}, floor {j['fd_floor']:.3f} ({j['kind']})")
    _write_json(args.json, report)


# ------------------------------------------------------------------------------------ parsers
def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "sample-many", formatter_class=FMT,
        help="N samples per class for FID: sharded over torchrun ranks, resumable, packed as an ADM .npz",
        description="Sample per-class images into OUT/shards (one atomic .npz per batch), then pack "
                    "OUT/samples.npz (uint8 NHWC arr_0 + labels, global-index order) and OUT/preview.png. Every "
                    "image is seeded from (--seed, its global index): the result does not depend on the number of "
                    "ranks or the batch size, and a rerun resumes. Several GPUs: torchrun --nproc-per-node 8 -m "
                    "mambagen sample-many ...")
    add_model_args(p, default=None, registered=True, device=False)
    p.add_argument("--out", required=True, help="output directory (resumed when it exists)")
    p.add_argument("--classes", default=None, help="comma-separated class ids or names (default: every class)")
    p.add_argument("--per-class", type=int, default=50, help="images per class")
    add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (and per shard) on each rank")
    p.add_argument("--png-dir", default=None, help="also write every image as PNG DIR/<index>_<label>.png")
    add_run_args(p)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="on CUDA, compile the family's block steps too (tens of seconds once; pays over many batches)")
    p.add_argument("--reference", action="store_true", help="the readable reference loop on CUDA too")
    p.set_defaults(fn=_cmd_sample_many)

    p = subparsers.add_parser(
        "eval", formatter_class=FMT,
        help="FID, KID, precision/recall (k=3) of samples vs a reference, beside a real-vs-real floor",
        description="Compare a sample set (.npz or image folder) with a reference. Features: the TF-Inception "
                    "TorchScript of the [fid] extra (pip install 'mambagen[fid]') or --inception PATH. Reference "
                    "features are cached next to the reference (or at --ref-cache). The floor is real vs real at the "
                    "run's sizes: as many reference images as samples, held out, vs the rest of the reference (two "
                    "halves if it has fewer than twice the samples), or --floor-ref vs the reference. --judge adds "
                    "the demo-scale judge's class accuracy and Fréchet distance.")
    p.add_argument("--samples", required=True, help="samples: .npz (arr_0 uint8 NHWC, optional labels) or folder")
    p.add_argument("--ref", "--reference", dest="ref", required=True,
                   help="reference: an image folder (e.g. emoji64/val), an .npz of images, or an ADM reference "
                        "batch (VIRTUAL_imagenet256_labeled.npz: its mu/sigma give the FID, as published)")
    p.add_argument("--ref-cache", default=None, help="reference feature cache (default: next to the reference)")
    p.add_argument("--ref-limit", type=int, default=None,
                   help="use a seeded random subset of this many reference images")
    p.add_argument("--floor-ref", default=None, help="real images for the floor (instead of a split of the reference)")
    p.add_argument("--inception", default=None, help="TorchScript feature network (default: the [fid] extra's)")
    p.add_argument("--is-network", default=None,
                   help="TorchScript network giving class logits, for the Inception Score")
    p.add_argument("--judge", default=None, help="judge directory from `mambagen train-judge`")
    p.add_argument("--image-size", type=int, default=None, help="size folders are read at (default: native)")
    p.add_argument("--batch-size", type=int, default=50, help="images per feature-network batch")
    p.add_argument("--k", type=int, default=3, help="neighbours of the precision/recall manifolds")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets averaged")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset (capped by the set sizes)")
    p.add_argument("--seed", type=int, default=0, help="seed of KID subsets, the floor split and --ref-limit")
    add_run_args(p, json=True)
    p.set_defaults(fn=_cmd_eval)

    p = subparsers.add_parser(
        "eval-nll", formatter_class=FMT, help="held-out bits per token of a generator on a tokenized split",
        description="Mean cross-entropy (bits/token) of a token dataset (`mambagen tokenize` of a held-out split) "
                    "under a generator, without label dropout. VAR/M-VAR need their multi-scale tokenizer "
                    "(the model directory's own or --tokenizer). Works under torchrun.")
    p.add_argument("--model", required=True, help="generator checkpoint directory")
    p.add_argument("--data", required=True, help="token dataset directory (held-out split)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (VAR/M-VAR, when the model has none)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per batch on each rank")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast of the forward passes")
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    add_run_args(p, json=True, progress=False)
    p.set_defaults(fn=_cmd_eval_nll)

    p = subparsers.add_parser(
        "eval-tokenizer", formatter_class=FMT, help="tokenizer reconstruction: PSNR, SSIM, codebook usage, rFID",
        description="Encode and decode every image; PSNR and SSIM on 8-bit images, codebook usage over the set, "
                    "and rFID (Inception features of the images vs their reconstructions) when the network exists.")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (or a pipeline directory)")
    p.add_argument("--data", required=True, help="image folder or .npz")
    p.add_argument("--image-size", type=int, default=None, help="default: the tokenizer's")
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of this many images")
    p.add_argument("--batch-size", type=int, default=32, help="images encoded and decoded at once")
    p.add_argument("--inception", default=None, help="TorchScript feature network (default: the [fid] extra's)")
    p.add_argument("--inception-batch-size", type=int, default=50, help="images per feature-network batch")
    p.add_argument("--judge", default=None, help="a judge directory (train-judge): also the Fréchet distance in its "
                   "features, real images vs reconstructions of other images, beside its real-vs-real floor")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset and of the judge's halves")
    add_run_args(p, json=True)
    p.set_defaults(fn=_cmd_eval_tokenizer)

    p = subparsers.add_parser(
        "train-judge", formatter_class=FMT, help="train the small CNN classifier that judges demo-scale samples",
        description="A ~0.46M-parameter CNN (4 stride-2 stages, GroupNorm, global pool) trained with flips and "
                    "small crops on a class-per-folder training split; reports val accuracy; writes "
                    "OUT/model.safetensors + OUT/config.json.")
    p.add_argument("--data", required=True, help="training images: root/<class>/<image>")
    p.add_argument("--val-data", default=None, help="validation images with the same class folders")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--image-size", type=int, default=None, help="default: the images' own size")
    p.add_argument("--widths", default="20,40,80,160", help="channels of the 4 stages")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_run_args(p)
    p.set_defaults(fn=_cmd_train_judge)

    p = subparsers.add_parser(
        "judge-samples", formatter_class=FMT, help="judge accuracy and judge-feature Fréchet distance of samples",
        description="Class accuracy of labelled samples under a trained judge, and the Fréchet distance between "
                    "samples and reference images in the judge's penultimate features, beside a real-vs-real floor. "
                    "When both carry labels the FD weights the samples to the reference's class mix (so 40 "
                    "samples per class compare fairly with an unbalanced val split); the unweighted FD is "
                    "reported beside it.")
    p.add_argument("--judge", required=True, help="judge directory")
    p.add_argument("--samples", required=True, help="samples .npz (with labels) or folder")
    p.add_argument("--ref", required=True, help="real images, e.g. emoji64/val")
    p.add_argument("--floor-ref", default=None, help="real images for the floor (instead of a split of the reference)")
    p.add_argument("--image-size", type=int, default=None, help="size images are read at (default: the judge's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the floor's split of the reference")
    add_run_args(p, json=True)
    p.set_defaults(fn=_cmd_judge_samples)
