"""Argument blocks every command shares, written once: the model/tokenizer/device block, the sampling
block (one `SamplingConfig`, defaulting to the checkpoint's recommendation), and how they resolve."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..sample.config import SamplingConfig

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds '(default: X)' where it tells something: not for flags, None defaults, or help that already
    says its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                   argparse.BooleanOptionalAction, argparse._VersionAction))
        if flag or action.default in (None, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return super()._get_help_string(action)


FMT = HelpFormatter
UNTRAINED_NOTE = "UNTRAINED: random weights - this grid shows the pipeline runs, not what it can learn"


def device_of(name: str | None) -> torch.device:
    """--device, checked (a CPU build asked for cuda, 'gpu') before any work."""
    from ..device import resolve_device
    return resolve_device(name)


def add_model_args(p, *, default: str | None = "demo", registered: bool = False, device: bool = True) -> None:
    """--model, --tokenizer, --ema (and --device)."""
    what = "'demo' (shipped in the package), a checkpoint directory" + (" or a registered model name "
                                                                       "(RANDOM weights)" if registered else "")
    p.add_argument("--model", default=default, required=default is None, help=what)
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the checkpoint's own"
                   + ("; a registered name's: its family's small tokenizer, random" if registered else "") + ")")
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checking the weight files against the digests in config.json")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="the generator's weights while sampling; auto: bf16 on CUDA (the fast paths' setting), "
                        "fp32 on CPU")
    if device:
        add_run_args(p, progress=False)


def add_run_args(p, *, json: bool = False, progress: bool = True) -> None:
    """--device, and --json (write the report) / --no-progress where the command has them."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    if json:
        p.add_argument("--json", default=None, help="write every number and count to this JSON file")
    if progress:
        p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_sampling_args(p) -> None:
    """The sampling setting; None = the checkpoint's recommendation (config.json "sampling"), else the defaults."""
    g = p.add_argument_group("sampling (default: the checkpoint's recommended setting)")
    g.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale, 1 = off (default: "
                   "the checkpoint's, else 2.0); VAR/M-VAR reach it at the last scale (official cfg = this - 1)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy (default 1)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens, 0 = off (default 0)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, 1 = off (default 1)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0; also the weights of registered models)")
    g.add_argument("--steps", type=int, default=None, help="ARPG: parallel decoding steps (default 64)")
    g.add_argument("--schedule", default=None, choices=["arccos", "cosine"], help="ARPG: tokens per step (default arccos)")
    g.add_argument("--cfg-schedule", default=None, choices=["linear", "constant"],
                   help="ARPG: guidance per step (default linear)")
    g.add_argument("--cfg-interval", type=int, default=None,
                   help="AiM/GPT (LlamaGen): guide tokens 0 .. N + 1 only (default -1: all)")
    g.add_argument("--more-smooth", action="store_true", default=None,
                   help="VAR/M-VAR: Gumbel-softmax mixtures of codes (the official visualisation)")


def sampling_from(args, recommendation: dict | None) -> SamplingConfig:
    """The one sampling setting of a command: the checkpoint's recommendation under the given flags."""
    return SamplingConfig.recommended(
        recommendation, cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, steps=args.steps, schedule=args.schedule, cfg_schedule=args.cfg_schedule,
        cfg_interval=args.cfg_interval, more_smooth=args.more_smooth)


def load_pipeline(args, device, *, registered: bool = False):
    """(model, tokenizer, config.json or {}, untrained?) from --model/--tokenizer/--ema.

    --model: 'demo', a checkpoint directory, or (registered=True) a registered size built with random
    weights shaped to the tokenizer (its family's small tokenizer unless --tokenizer names one)."""
    from ..checkpoint import Pipeline, load, load_tokenizer
    from ..sources import resolve
    from ..models.registry import REGISTRY, create_model, family_of_size
    from ..tokenizers import KINDS, create_tokenizer, list_tokenizers

    source = resolve(args.model)
    model, tokenizer, meta, untrained = None, None, {}, False
    verify = getattr(args, "verify", True)
    if source.exists():
        obj, meta = load(source, device=device, ema=args.ema, with_meta=True, verify=verify)
        if meta.get("kind") == "tokenizer":
            raise ValueError(f"{args.model}: holds a tokenizer, not a generator")
        model, tokenizer = (obj.generator, obj.tokenizer) if isinstance(obj, Pipeline) else (obj, None)
    elif not (registered and args.model in REGISTRY):
        if registered:
            raise ValueError(f"--model {args.model!r} is neither a checkpoint directory nor a registered model "
                             f"({', '.join(REGISTRY)})")
        raise ValueError(f"--model {args.model!r} is not a checkpoint directory")

    tok_arg = args.tokenizer
    if tok_arg is None and model is None:
        tok_arg = KINDS[family_of_size(args.model).tokenizer].demo
    if tok_arg is not None:
        if Path(tok_arg).exists():
            own, tokenizer = tokenizer, load_tokenizer(tok_arg, device, verify=verify)
            # another tokenizer must make the same ids as the one the model was trained on (its own, or
            # the one config.json records), not just have as many codes
            expected = own.config.to_dict() if own is not None else meta.get("tokenizer_config")
            if isinstance(expected, dict):
                from ..tokenizers import check_same_tokenizer
                check_same_tokenizer(expected, tokenizer, f"--tokenizer {tok_arg}", f"{args.model} was trained with")
        elif tok_arg in list_tokenizers():
            torch.manual_seed(args.seed or 0)
            tokenizer, untrained = create_tokenizer(tok_arg).to(device).eval(), True
        else:
            raise ValueError(f"--tokenizer {tok_arg!r} is neither a directory nor a registered tokenizer "
                             f"({', '.join(list_tokenizers())})")
    if tokenizer is None:
        raise ValueError(f"{args.model} has no tokenizer/: pass --tokenizer DIR")
    if model is None:   # a registered size with random weights, shaped to fit the tokenizer
        torch.manual_seed(args.seed or 0)
        shape = family_of_size(args.model).fit(tokenizer)
        model, untrained = create_model(args.model, **shape).to(device).eval(), True
    from ..sample.pipeline import set_precision
    set_precision(model, tokenizer, getattr(args, "precision", "fp32"), device)
    return model, tokenizer, meta, untrained


def check_positive(args, *names: str) -> None:
    """Integer options that must be >= 1 when given (--scale 0, --nrow -2 are refused)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def parse_classes(text: str | None, num_classes: int, names: list[str] | tuple = ()) -> list[int]:
    """--classes: comma-separated class ids or, where the checkpoint records them, class names."""
    if text is None:
        return list(range(num_classes))
    ids = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        if t.lstrip("-").isdigit():
            ids.append(int(t))
        elif t in names:
            ids.append(list(names).index(t))
        else:
            known = f"; its classes: {', '.join(names)}" if names else " (this checkpoint records no class names)"
            raise ValueError(f"--classes: {t!r} is neither a class id nor a class name{known}")
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad or not ids:
        raise ValueError(f"class id(s) {bad or text!r} out of range: this model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return ids
