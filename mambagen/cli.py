"""`mambagen` command line: info, sample, convert (more subcommands join as families land)."""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

from .checkpoint import resolve
from .io import CheckpointError

SUBCOMMAND_MODULES: list[str] = ["mambagen.data.tokens", "mambagen.train.loop", "mambagen.data.emoji", "mambagen.train.tokenizer", "mambagen.bench", "mambagen.eval.cli"]

UNTRAINED_NOTE = "UNTRAINED: random weights - this grid shows the pipeline runs, not what it can learn"


# ------------------------------------------------------------------------------------------- info
def cmd_info(args) -> None:
    from .layers import kernels
    from .models.registry import REGISTRY, count_params, create_model
    from .tokenizers import create_tokenizer, list_tokenizers

    print(f"mambagen {__import__('mambagen').__version__}  torch {torch.__version__}  "
          f"cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print("\nGenerators (parameters counted on the meta device; tied weights once):")
    print(f"  {'name':<12} {'family':<7} {'params':>15} {'official':>15}  description")
    for name, spec in REGISTRY.items():
        with torch.device("meta"):
            n = count_params(create_model(name))
        official = f"{spec.official_params:,}" if spec.official_params else "-"
        mark = "" if spec.official_params in (None, n) else "  MISMATCH"
        print(f"  {name:<12} {spec.family:<7} {n:>15,} {official:>15}  {spec.description}{mark}")
    print("\nTokenizers:")
    for name in list_tokenizers():
        with torch.device("meta"):
            tok = create_tokenizer(name)
        c = tok.config
        if hasattr(tok, "patch_nums"):
            what = f"codebook {c.vocab_size} x {c.z_channels}, downsample {c.downsample}, scales {tuple(c.patch_nums)}"
        else:
            what = f"codebook {c.codebook_size} x {c.codebook_embed_dim}, downsample {c.downsample}"
        print(f"  {name:<12} {sum(p.numel() for p in tok.parameters()):>15,}  {what}")
    found = [k for k, v in kernels.available().items() if v]
    print(f"\nOptional fast kernels found: {', '.join(found) if found else 'none (pure PyTorch reference paths)'}")


# ------------------------------------------------------------------------------------------- sample
def _resolve(args, device):
    """(generator, tokenizer, untrained?) from --model/--tokenizer (directories or registered names)."""
    from .checkpoint import Pipeline, load, load_tokenizer
    from .models.registry import REGISTRY, create_model
    from .tokenizers import create_tokenizer, list_tokenizers

    untrained = False
    tokenizer = None
    if args.model == "demo":   # the pipeline shipped in the package
        args.model = str(resolve("demo"))
    if Path(args.model).exists():
        obj = load(args.model, device=device, ema=args.ema)
        generator, tokenizer = (obj.generator, obj.tokenizer) if isinstance(obj, Pipeline) else (obj, None)
    elif args.model in REGISTRY:
        generator, untrained = None, True
    else:
        raise SystemExit(f"error: --model {args.model!r} is neither a checkpoint directory nor a registered model "
                         f"({', '.join(REGISTRY)})")

    default_tok = "msvq-tiny" if args.model in REGISTRY and REGISTRY[args.model].family in ("var", "mvar") else "vq-tiny"
    tok_arg = args.tokenizer if args.tokenizer is not None or generator is not None else default_tok
    if tok_arg is not None:
        if Path(tok_arg).exists():
            tokenizer = load_tokenizer(tok_arg, device)
        elif tok_arg in list_tokenizers():
            torch.manual_seed(args.seed)
            tokenizer, untrained = create_tokenizer(tok_arg).to(device).eval(), True
        else:
            raise SystemExit(f"error: --tokenizer {tok_arg!r} is neither a directory nor a registered "
                             f"tokenizer ({', '.join(list_tokenizers())})")
    if tokenizer is None:
        raise SystemExit("error: this model directory has no tokenizer/; pass --tokenizer DIR")
    if generator is None:  # a registered size with random weights, shaped to fit the tokenizer
        torch.manual_seed(args.seed)
        if hasattr(tokenizer, "patch_nums"):
            shape = dict(patch_nums=tuple(tokenizer.patch_nums), Cvae=tokenizer.config.z_channels)
        else:
            grid = tokenizer.config.image_size // tokenizer.downsample
            shape = dict(num_tokens=grid * grid)
        generator = create_model(args.model, vocab_size=tokenizer.codebook_size, **shape).to(device).eval()
    return generator, tokenizer, untrained


def _parse_classes(text: str | None, num_classes: int) -> list[int]:
    if text is None:
        return list(range(num_classes))
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise SystemExit(f"error: --classes must be comma-separated integers, got {text!r}") from None
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad or not ids:
        raise SystemExit(f"error: class id(s) {bad or text!r} out of range: this model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return ids


def cmd_sample(args) -> None:
    from tqdm.auto import tqdm

    from .images import add_banner, make_grid, save_image, save_npz, to_uint8
    from .sample.logits import check_sampling_args
    from .sample.pipeline import check_pair, sample_images

    if args.per_class < 1 or args.batch_size < 1:
        raise SystemExit("error: --per-class and --batch-size must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator, tokenizer, untrained = _resolve(args, device)
    if args.cfg is None:   # the checkpoint's recommended scale (config.json "sampling"), else 2.0
        from .checkpoint import read_config
        args.cfg = float(read_config(args.model).get("sampling", {}).get("cfg", 2.0)) if Path(args.model).is_dir() else 2.0
    try:
        check_sampling_args(args.cfg, args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    check_pair(generator, tokenizer)
    classes = _parse_classes(args.classes, generator.config.num_classes)
    labels = torch.tensor([c for c in classes for _ in range(args.per_class)], device=device)

    rng = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.time()
    images, chunks = [], labels.split(args.batch_size)
    for chunk in tqdm(chunks, desc="sampling", unit="batch", disable=len(chunks) == 1 and not args.progress):
        imgs, _ = sample_images(generator, tokenizer, chunk, cfg_scale=args.cfg, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, rng=rng, progress=args.progress,
                                fast=False if args.reference or args.progress else None, compile=args.compile)
        images.append(imgs.cpu())
    arr = to_uint8(torch.cat(images))
    dt = time.time() - t0

    grid = make_grid(arr, nrow=args.nrow or (args.per_class if args.per_class > 1 else None), scale=args.scale)
    if untrained:
        grid = add_banner(grid, UNTRAINED_NOTE if grid.width > 600 else "UNTRAINED: random weights")
        print(f"note: {UNTRAINED_NOTE}", file=sys.stderr)
    out = save_image(grid, args.out)
    print(f"wrote {out} ({len(arr)} images, classes {classes}, cfg {args.cfg}, {dt:.1f} s on {device})")
    if args.npz:
        print(f"wrote {save_npz(args.npz, arr, labels.cpu().numpy())} (uint8 NHWC arr_0 + labels)")


# ------------------------------------------------------------------------------------------- edit
def cmd_edit(args) -> None:
    import numpy as np
    from PIL import Image

    from .data.folder import load_image
    from .images import make_grid, save_image, to_uint8
    from .sample.edit import border_region, edit, image_size_of

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator, tokenizer, untrained = _resolve(args, device)
    size = image_size_of(generator, tokenizer)
    image = load_image(args.image, size)[None].to(device)                       # (1, 3, S, S)
    classes = _parse_classes(args.classes, generator.config.num_classes)
    labels = torch.tensor([classes[i % len(classes)] for i in range(args.num)], device=device)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    sampling = dict(cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.canvas:   # ARPG: a larger canvas around the image (outpainting / resolution expansion)
        from .sample.edit import outpaint_canvas
        out = outpaint_canvas(generator, tokenizer, image.expand(args.num, -1, -1, -1), labels, args.canvas,
                              generator=rng, **sampling)
        save_image(make_grid(to_uint8(out), nrow=args.num, scale=args.scale), args.out)
        print(f"wrote {args.out}: {args.num} outpaintings on a {args.canvas}x{args.canvas}-token canvas")
        return
    if args.mask is not None:
        try:
            mask = Image.open(args.mask).convert("L")
        except (OSError, ValueError) as e:
            raise ValueError(f"{args.mask}: not a readable mask image ({e})") from None
        if mask.size != Image.open(args.image).size and mask.size != (size, size):
            raise ValueError(f"mask {args.mask} is {mask.size[0]}x{mask.size[1]} but the image is "
                             f"{Image.open(args.image).size[0]}x{Image.open(args.image).size[1]}")
        mask = mask.resize((size, size), Image.NEAREST) if mask.size != (size, size) else mask
        region = torch.from_numpy(np.array(mask) > 127)
        if args.mode == "outpaint":
            region = ~region          # the mask marks what to keep when outpainting
    elif args.mode == "outpaint":
        region = border_region(size, args.keep)
    else:
        raise SystemExit("error: --mask is required for inpainting (white = regenerate)")
    region = region.to(device)
    out = edit(generator, tokenizer, image.expand(args.num, -1, -1, -1), region, labels, rng=rng, **sampling)
    shown = image.clone()
    shown[:, :, region] = shown[:, :, region] * 0.3 + 0.7   # the region to regenerate, greyed out
    grid = make_grid(to_uint8(torch.cat([image, shown, out.to(image.dtype)])), nrow=args.num + 2, scale=args.scale)
    save_image(grid, args.out)
    note = " (UNTRAINED weights)" if untrained else ""
    print(f"wrote {args.out}: original, region, {args.num} edit(s) with classes {labels.tolist()}{note}")


# ------------------------------------------------------------------------------------------- convert
def cmd_convert(args) -> None:
    from .checkpoint import save_model, save_tokenizer
    from .convert import load_official_aim
    from .convert.llamagen_vq import load_official_llamagen_vq
    from .io import read_json

    config = read_json(args.config) if args.config else None
    if args.family == "aim":
        model, tokenizer = load_official_aim(args.weights, config)
        out = save_model(model, args.out, tokenizer=tokenizer, extra={"source": str(args.weights)})
        print(f"wrote {out} (AiM {sum(p.numel() for p in model.parameters()):,} params"
              f"{', with its tokenizer' if tokenizer is not None else ''})")
    elif args.family == "llamagen_vq":
        tok = load_official_llamagen_vq(args.weights, config)
        print(f"wrote {save_tokenizer(tok, args.out, extra={'source': str(args.weights)})}")
    elif args.family == "var_vqvae":
        from .convert.var_vqvae import load_official_var_vqvae
        tok = load_official_var_vqvae(args.weights, config)
        print(f"wrote {save_tokenizer(tok, args.out, extra={'source': str(args.weights)})}")
    elif args.family in ("gpt", "arpg"):
        from .convert.arpg import load_official_arpg
        from .convert.gpt import load_official_gpt
        model = (load_official_gpt if args.family == "gpt" else load_official_arpg)(args.weights, config)
        tok = load_official_llamagen_vq(args.vq) if args.vq else None
        out = save_model(model, args.out, tokenizer=tok, extra={"source": str(args.weights)})
        print(f"wrote {out} ({args.family.upper()} {sum(p.numel() for p in model.parameters()):,} params"
              f"{' + VQ tokenizer' if tok is not None else ''})")
    elif args.family in ("var", "mvar"):
        from .convert.var import load_official_var
        from .convert.var_vqvae import load_official_var_vqvae
        if args.vae is None:
            raise SystemExit(f"error: {args.family} needs --vae vae_ch160v4096z32.pth (the VQVAE it was trained with)")
        vae = load_official_var_vqvae(args.vae)
        model = load_official_var(args.family, args.weights, config, vocab_size=vae.codebook_size,
                                  Cvae=vae.config.z_channels)
        out = save_model(model, args.out, tokenizer=vae, extra={"source": str(args.weights)})
        print(f"wrote {out} ({args.family.upper()} {sum(p.numel() for p in model.parameters()):,} params + VQVAE)")


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mambagen", description="Class-conditional autoregressive image generation "
                                "with Mamba (AiM) and its baselines.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="registered models with parameter counts, tokenizers, kernels")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("sample", help="sample a PNG grid (and optionally an .npz) of class-conditional images",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Sample images. --model is 'demo' (the AiM + tokenizer trained on the emoji demo "
                       "data, shipped in the package), a checkpoint directory (ours; `mambagen convert` makes one "
                       "from official weights) or a registered name, which is built with RANDOM weights (useful to "
                       "check the pipeline; the grid is labelled untrained).")
    s.add_argument("--model", default="demo", help="'demo', a checkpoint directory or a registered model name")
    s.add_argument("--tokenizer", default=None, help="tokenizer directory or registered tokenizer name "
                   "(default: the checkpoint's own; vq-tiny for a registered model)")
    s.add_argument("--classes", default=None, help="comma-separated class ids (default: every class)")
    s.add_argument("--per-class", type=int, default=4, help="images per class")
    s.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = off; default: "
                   "the checkpoint's recommended scale, else 2.0); VAR/M-VAR reach it at the last scale "
                   "(official cfg = this - 1)")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    s.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    s.add_argument("--seed", type=int, default=0, help="random seed (sampling, and weights of registered models)")
    s.add_argument("--batch-size", type=int, default=32, help="images sampled at once")
    s.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    s.add_argument("--out", default="samples.png", help="output grid (.png/.jpg/.webp)")
    s.add_argument("--npz", default=None, help="also write the images as uint8 NHWC .npz (arr_0, labels)")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: per-class)")
    s.add_argument("--scale", type=int, default=2, help="upscale the grid by this integer factor")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--progress", action="store_true", help="show a per-token progress bar (reference sampler)")
    s.add_argument("--reference", action="store_true",
                   help="use the readable reference sampling loop on CUDA too (default there: the fast path, "
                        "CUDA graphs built on the first batch; docs/speed.md)")
    s.add_argument("--compile", action="store_true",
                   help="on CUDA, also compile the model's block steps (tens of seconds once; pays over many batches)")
    s.set_defaults(fn=cmd_sample)

    s = sub.add_parser("edit", help="zero-shot inpainting / outpainting / class-conditional editing of an image",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Regenerate a region of an image and keep the rest. VAR/M-VAR: any region "
                       "(known tokens are teacher-forced at every scale). ARPG: any region (known tokens decoded "
                       "first), and --canvas for outpainting onto a larger grid. AiM/GPT: a bottom band, continued "
                       "from the rows above it. The image is resized/cropped to the model's resolution.")
    s.add_argument("--model", required=True, help="checkpoint directory (a pipeline with its tokenizer)")
    s.add_argument("--tokenizer", default=None, help="tokenizer directory, if the model has none")
    s.add_argument("--image", required=True, help="input image")
    s.add_argument("--mask", default=None, help="mask image of the same size: white = regenerate "
                   "(outpaint: white = keep)")
    s.add_argument("--mode", choices=["inpaint", "outpaint"], default="inpaint")
    s.add_argument("--keep", type=float, default=0.5, help="outpaint without --mask: centre fraction kept")
    s.add_argument("--canvas", type=int, default=0, help="ARPG: outpaint onto a larger canvas of this many tokens "
                   "a side (resolution expansion); the image stays in the centre")
    s.add_argument("--classes", default=None, help="class id(s) for the regenerated region, comma-separated")
    s.add_argument("--num", type=int, default=4, help="number of edits")
    s.add_argument("--cfg", type=float, default=2.0, help="guidance scale (1 = off)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    s.add_argument("--scale", type=int, default=2, help="upscale the output grid")
    s.add_argument("--device", default=None)
    s.add_argument("--out", default="edit.png", help="output grid: original, region, edits")
    s.set_defaults(fn=cmd_edit)

    s = sub.add_parser("convert", help="official checkpoint -> our checkpoint directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Convert official weights (read without unpickling code) to a mambagen "
                       "directory. aim: the HF directory of hp-l33/aim-* (config.json + model.safetensors; the "
                       "tokenizer inside is converted too) or a state dict + --config. llamagen_vq: vq_ds16_c2i.pt. "
                       "var / mvar: var_d16.pth / d16.pth with --vae vae_ch160v4096z32.pth. var_vqvae: the VQVAE alone. "
                       "gpt / arpg: c2i_L_256.pt / arpg_300m.pt (+ --vq vq_ds16_c2i.pt).")
    s.add_argument("family", choices=["aim", "llamagen_vq", "gpt", "arpg", "var", "mvar", "var_vqvae"])
    s.add_argument("weights", help="official file or directory")
    s.add_argument("out", help="output directory")
    s.add_argument("--config", default=None, help="official config as JSON (MambaConfig / ModelArgs / VAR(...) "
                   "fields); VAR/M-VAR configs are inferred from the tensors when omitted")
    s.add_argument("--vae", default=None, help="var/mvar: the official VQVAE file (vae_ch160v4096z32.pth)")
    s.add_argument("--vq", default=None, help="gpt/arpg: the LlamaGen VQ file (vq_ds16_c2i.pt) to ship alongside")
    s.set_defaults(fn=cmd_convert)

    # subcommands defined next to the code they drive: each module has add_cli(subparsers)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (CheckpointError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
