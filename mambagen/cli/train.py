"""`mambagen train` (stage 2, the generator) and `mambagen train-tokenizer` (stage 1)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ..train.loop import TrainConfig, train
from ..train.tokenizer import TOKENIZER_NAMES, TokenizerTrainConfig, train_tokenizer
from .common import FMT


def add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a generator on token shards (single process or torchrun)",
        formatter_class=FMT,
        description="Stage 2: train a generator on token shards made by `mambagen tokenize`. Multi-GPU: "
                    "torchrun --nproc-per-node 8 -m mambagen train ... (DDP; --strategy fsdp for large sizes).")
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    p.add_argument("--data", required=True, help="token dataset directory (train split)")
    p.add_argument("--out", required=True, help="run directory (logs, checkpoints, samples, final/)")
    p.add_argument("--model", default=defaults["model"], help="registered model name or checkpoint directory")
    p.add_argument("--model-overrides", default="{}", help="JSON dict of config overrides, e.g. '{\"n_layer\": 8}'")
    p.add_argument("--val-data", default=None, help="token dataset for held-out bits/token")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (sample grids; shipped with final/)")
    helps = {
        "steps": "optimizer steps in total", "batch_size": "global batch per step (all ranks x grad-accum)",
        "grad_accum": "micro-batches per step on each rank", "warmup": "linear warm-up steps",
        "ckpt_every": "write a training checkpoint every N steps (and at the end)",
        "keep_last": "training checkpoints kept", "log_every": "log train metrics every N steps",
        "eval_every": "held-out bits/token and a sample grid every N steps", "seed": "seed of init, data order, drops",
        "lr": "peak learning rate per 256 images (scaled linearly with --batch-size)",
        "min_lr_ratio": "cosine decay ends at lr x this", "weight_decay": "AdamW weight decay (matrices only)",
        "grad_clip": "max gradient norm (0 = no clipping)", "ema": "EMA decay of the weights (0 = off; e.g. 0.9999)",
        "sample_cfg": "CFG scale of the periodic sample grids",
    }
    for name, kind in [(n, int) for n in ("steps", "batch_size", "grad_accum", "warmup", "ckpt_every", "keep_last",
                                          "log_every", "eval_every", "seed")] + \
                      [(n, float) for n in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "ema", "sample_cfg")]:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults[name], help=helps[name])
    p.add_argument("--class-dropout", type=float, default=None, help="label -> null probability (None: the model's)")
    p.add_argument("--class-balance", type=float, default=defaults["class_balance"], metavar="POWER",
                   help="draw each image with weight count(its class)^-POWER: 0 as the data is, 1 every class "
                        "equally often, 0.5 between (long-tailed data: small classes are trained more)")
    p.add_argument("--scan-chunk", type=int, default=64, help="Mamba2 scan chunk while training (memory only)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every block")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (on a GPU: faster steps after "
                   "a minute of compiling)")
    p.add_argument("--keep-best", action="store_true",
                   help="keep OUT/best: the model (and EMA) at the lowest held-out bits/token (early stopping)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp", help="how several processes share the model")
    p.add_argument("--device", default=None, help="cpu or cuda (None: cuda if available)")
    add_run_folder_args(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(fn=_cmd_train)


def add_run_folder_args(p) -> None:
    """--resume, --overwrite, --allow-changes: what to do with a folder that holds a run."""
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (deletes its "
                   "checkpoints, logs and final model)")
    p.add_argument("--allow-changes", action="store_true", help="with --resume: continue although the batch size, "
                   "seed or learning rate differ from the run's")


def _cmd_train(args) -> None:
    try:
        overrides = json.loads(args.model_overrides)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-overrides is not valid JSON: {e}") from None
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    final = train(TrainConfig(**{**values, "model_overrides": overrides}))
    print(f"final model: {final}")


def _cmd_train_tokenizer(args) -> None:
    fields = {f.name for f in dataclasses.fields(TokenizerTrainConfig)}
    cfg = TokenizerTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    _console_logging()
    path = train_tokenizer(cfg)
    print(f"wrote {path} (curves: {Path(cfg.out) / 'curves.png'})")


class _TqdmHandler(logging.Handler):
    """Log lines through tqdm.write so they do not break the progress bar."""

    def emit(self, record):
        from tqdm.auto import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def _console_logging() -> None:
    pkg = logging.getLogger("mambagen")
    if not any(isinstance(h, _TqdmHandler) for h in pkg.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)


def add_train_tokenizer(subparsers) -> None:
    d = {f.name: f.default for f in dataclasses.fields(TokenizerTrainConfig)}
    p = subparsers.add_parser(
        "train-tokenizer", help="train a VQ image tokenizer (stage 1)",
        formatter_class=FMT,
        description="Train a VQ tokenizer on a class-per-folder image tree (root/<class>/<image>). Writes "
        "log.csv, TensorBoard events (tb/), curves.png, recon_<step>.png grids, checkpoints/step_<N>/ and the "
        "final loadable tokenizer/ to --out. Single process (one GPU or CPU).",
        epilog="example: mambagen train-tokenizer --data ROOT/train --val-data ROOT/val --out runs/vq "
        "--tokenizer vq-f8-small --image-size 64 --batch-size 64 --steps 20000")
    g = p.add_argument_group("data and run")
    g.add_argument("--data", required=True, default=argparse.SUPPRESS, help="training images: ROOT/<class>/<image>")
    g.add_argument("--val-data", default=d["val_data"], help="validation images (same layout); "
                   "None: evaluate on a subset of the training images")
    g.add_argument("--out", required=True, default=argparse.SUPPRESS, help="run directory")
    g.add_argument("--tokenizer", default=d["tokenizer"], choices=TOKENIZER_NAMES, help="tokenizer config")
    g.add_argument("--image-size", type=int, default=d["image_size"], help="training resolution (square)")
    g.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=d["random_flip"],
                   help="random horizontal flips of training images")
    add_run_folder_args(g)
    g.add_argument("--seed", type=int, default=d["seed"], help="seed of weights, data order and flips")
    g.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader worker processes")
    g.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:1 ... (None: cuda if available)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d["progress"],
                   help="tqdm progress bar")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per step")
    g.add_argument("--steps", type=int, default=d["steps"], help="total optimizer steps")
    g.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (AdamW)")
    g.add_argument("--betas", type=float, nargs=2, default=list(d["betas"]), metavar=("B1", "B2"),
                   help="AdamW betas")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="AdamW weight decay")
    g.add_argument("--warmup", type=int, default=d["warmup"], help="linear warm-up steps")
    g.add_argument("--lr-schedule", default=d["lr_schedule"], choices=["constant", "cosine"],
                   help="after warm-up: constant, or cosine decay to 0")
    g.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="max gradient norm (0 = off)")
    g.add_argument("--ema", type=float, default=d["ema"], help="EMA decay of the weights, e.g. 0.999 (0 = off); "
                   "the EMA tokenizer goes to tokenizer_ema/")

    g = p.add_argument_group("losses")
    g.add_argument("--l2-weight", type=float, default=d["l2_weight"], help="MSE reconstruction weight")
    g.add_argument("--l1-weight", type=float, default=d["l1_weight"], help="L1 reconstruction weight")
    g.add_argument("--perceptual-weights", default=d["perceptual_weights"], metavar="FILE",
                   help="turns the perceptual loss on: an LPIPS-VGG16 state dict (.safetensors/.pt: torchvision "
                   "VGG16 features.N.* + lin0..lin4), or a judge directory (mambagen train-judge: an LPIPS-like "
                   "distance over its stages; score with another judge); nothing is downloaded, None = off")
    g.add_argument("--perceptual-weight", type=float, default=d["perceptual_weight"], help="LPIPS loss weight")
    g.add_argument("--gan-weight", type=float, default=d["gan_weight"], help="hinge GAN weight (0 = off; 0.5 typical)")
    g.add_argument("--disc-start", type=int, default=d["disc_start"], help="step at which the GAN starts")
    g.add_argument("--disc-layers", type=int, default=d["disc_layers"], help="PatchGAN stride-2 layers")
    g.add_argument("--disc-channels", type=int, default=d["disc_channels"], help="PatchGAN base width")
    g.add_argument("--disc-norm", default=d["disc_norm"], choices=["group", "batch"], help="PatchGAN norm")
    g.add_argument("--adaptive-gan-weight", action="store_true",
                   help="scale the GAN term by the reconstruction/GAN gradient-norm ratio (taming)")

    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--log-every", type=int, default=d["log_every"], help="steps between logged (averaged) scalars")
    g.add_argument("--eval-every", type=int, default=d["eval_every"], help="steps between evaluations")
    g.add_argument("--eval-images", type=int, default=d["eval_images"], help="images per evaluation (0 = all)")
    g.add_argument("--grid-images", type=int, default=d["grid_images"], help="images in each recon grid")
    g.add_argument("--ckpt-every", type=int, default=d["ckpt_every"], help="steps between checkpoints")
    g.add_argument("--keep-last", type=int, default=d["keep_last"], help="checkpoints kept")
    p.set_defaults(fn=_cmd_train_tokenizer)


def add_parsers(subparsers) -> None:
    add_train_tokenizer(subparsers)
    add_train(subparsers)
