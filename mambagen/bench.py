"""`mambagen bench`: generation and training throughput, measured side by side in one run.

Random weights, class-conditional, CFG on. Generation times cover token generation only
(the tokenizer's decode is timed separately); training times one optimizer step (bf16
autocast, AdamW) on random tokens. Results: JSON (one record per measurement: kind, model,
path, batch, images or tokens per second, peak memory; docs/speed.md lists every field) + a
markdown table, with the device, torch version and command line.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from .io import atomic_path, write_json

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}   # dense bf16 datasheet peaks, for MFU


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timeit_calls(fn, repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls of fn, the device synchronised around each."""
    times = []
    for _ in range(repeat):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return times


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"


def _model(name: str, device, dtype, image_size: int | None = None):
    """A registered size with random weights; `image_size`: its grid (and position tables) for images of
    that side at the official 16x downsampling (raster and random-order families)."""
    from .models.registry import create_model, family_of_size
    torch.manual_seed(0)
    overrides = {}
    if image_size is not None:
        if family_of_size(name).sampler.name == "next-scale":
            raise ValueError(f"--image-size: {name} is a next-scale model (its scales are fixed by its tokenizer); "
                             "the scaling bench takes raster and random-order models")
        overrides["num_tokens"] = (image_size // 16) ** 2
    return create_model(name, **overrides).to(device=device, dtype=dtype).eval()


def generation_setting(model, cfg_scale: float):
    """The benchmark's sampling setting (the family's official top-k/top-p/steps, CFG on) and a random
    tokenizer whose ids the model takes (next-scale sampling runs its quantizer)."""
    from .models.registry import family_of
    from .sample.config import SamplingConfig
    from .tokenizers import KINDS
    family, p = family_of(model), next(model.parameters())
    tokenizer = KINDS[family.tokenizer].shaped(model.config).to(device=p.device, dtype=p.dtype).eval()
    return SamplingConfig(**{"cfg_scale": cfg_scale, "top_k": 0, **family.official_sampling}), tokenizer


def _generation_run(model, tokenizer, sampling, batch: int, path: str, rng):
    """run(labels) -> tokens of `batch` images on one of the benchmark's paths (`add_cli`'s --generate help)."""
    from .models.registry import family_of
    from .sample.pipeline import Sampler
    family = family_of(model)
    if path in ("reference", "fast", "graph"):   # graph: the call graphed without compiling (the eager steps)
        sampler = Sampler(model, tokenizer, sampling, fast=path != "reference", compile=path == "fast")
        return lambda labels: sampler.result(labels, rng)
    if path == "sample-many":                    # sample-many's own token generation (per-row streams)
        from .eval.sample_many import sample_tokens
        seeds = list(range(batch))
        return lambda labels: sample_tokens(model, tokenizer, labels, seeds, sampling, fast=True, compile=True)
    if family.sampler.name != "raster":
        raise ValueError(f"path {path!r} is for raster families (AiM, GPT), not {family.name}")
    from .sample.fast import GraphedRasterSampler  # fast-unfused: AiM without its fused kernels; fast-autotune
    options = dict(fused=False) if path == "fast-unfused" else dict(compile_mode="max-autotune-no-cudagraphs")
    sampler = GraphedRasterSampler(model, family.fast, batch, sampling, **options)
    return lambda labels: sampler.generate(labels, rng)


def bench_generation(name: str, batch: int, precision: str, path: str, cfg_scale: float, repeat: int, device,
                     image_size: int | None = None) -> dict:
    """Seconds per batch of `batch` images (tokens only) on the reference or a fast path."""
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    model = _model(name, device, dtype, image_size)
    labels = torch.arange(batch, device=device) % model.config.num_classes
    g = torch.Generator(device=device).manual_seed(0)
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    t_setup = time.perf_counter()
    sampling, tokenizer = generation_setting(model, cfg_scale)
    call = _generation_run(model, tokenizer, sampling, batch, path, g)
    run = lambda: call(labels)
    with torch.no_grad():
        run()                                                   # warm-up (and compilation)
        setup = time.perf_counter() - t_setup
        times = timeit_calls(run, 1 if path == "reference" and setup > 5 else repeat)   # slow references: once
    spb = sorted(times)[len(times) // 2]
    kind = "sample_many" if path == "sample-many" else "generation"
    return {"kind": kind, "model": name, "path": path, "batch": batch, "cfg": cfg_scale,
            "precision": precision, "steps": getattr(model.config, "num_tokens", None),
            "sampling": sampling.to_dict(), "image_size": image_size, "tokens": model.config.num_tokens,
            "us_per_token": spb / batch / model.config.num_tokens * 1e6,
            "seconds_per_batch": spb, "images_per_s": batch / spb, "setup_s": setup, "repeats": times,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None}


def bench_decode(tokenizer: str, batch: int, precision: str, repeat: int, device) -> dict:
    from .tokenizers import create_tokenizer
    tok = create_tokenizer(tokenizer).to(device=device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    n = getattr(tok, "num_tokens", None) or (tok.config.image_size // tok.downsample) ** 2
    ids = torch.randint(0, tok.codebook_size, (batch, n), device=device)
    with torch.no_grad(), autocast:
        tok.decode(ids)
        times = timeit_calls(lambda: tok.decode(ids), repeat)
    spb = sorted(times)[len(times) // 2]
    return {"kind": "tokenizer_decode", "model": tokenizer, "batch": batch, "precision": precision,
            "seconds_per_batch": spb, "images_per_s": batch / spb}


def training_inputs(model, batch: int, device) -> tuple:
    """The model's training-forward arguments for `batch` random token sequences and labels (the family's
    `train_inputs`, with the quantizer the family needs): what the training bench steps on."""
    from .models.registry import family_of
    from .tokenizers import KINDS
    cfg, family = model.config, family_of(model)
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.num_tokens), device=device)
    labels = torch.randint(0, cfg.num_classes, (batch,), device=device)
    quantizer = KINDS[family.tokenizer].shaped(cfg).quantize.to(device) if family.needs_quantizer else None
    return family.train_inputs(model, tokens, labels, quantizer, None)


def training_step(name: str, batch: int, precision: str, device, compile_model: bool = False,
                  checkpointing: bool = False, scan: str = "auto", scan_chunk: int = 64,
                  image_size: int | None = None, kernels: bool = False):
    """(model, step, scan_fn): one optimizer step (forward, backward, AdamW) of a random-weight model on
    random tokens, as `bench_training` times it and bench/profile_train.py profiles it; scan_fn is the
    Mamba2 scan a training forward takes (what "auto" resolves to), None without Mamba2."""
    from .train.optim import make_optimizer
    torch.manual_seed(0)
    model = _model(name, device, torch.float32, image_size).train()
    from .layers.mamba2 import Mamba2, choose_scan, set_kernels, set_scan_chunk, set_scan_impl
    set_scan_chunk(model, scan_chunk)
    set_scan_impl(model, scan)
    set_kernels(model, kernels)
    has_mamba = any(isinstance(m, Mamba2) for m in model.modules())
    scan_fn = (choose_scan(scan, model.config.num_tokens, cuda=device.type == "cuda", training=True).__name__
               if has_mamba else None)   # what "auto" resolves to
    if checkpointing:
        from .train.memory import checkpoint_blocks
        checkpoint_blocks(model)
    inputs = training_inputs(model, batch, device)
    opt = make_optimizer(model, 1e-4)
    fwd = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            _, loss = fwd(*inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step, scan_fn


def bench_training(name: str, batch: int, precision: str, repeat: int, device, compile_model: bool = False,
                   checkpointing: bool = False, scan: str = "auto", scan_chunk: int = 64,
                   image_size: int | None = None, kernels: bool = False) -> dict:
    """Tokens/s of one optimizer step (forward, backward, AdamW) and model FLOP utilisation (6 N per token)."""
    from .models.registry import count_params
    model, step, scan_fn = training_step(name, batch, precision, device, compile_model, checkpointing, scan,
                                         scan_chunk, image_size, kernels)
    has_mamba, N = scan_fn is not None, model.config.num_tokens
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    step(), step()
    times = timeit_calls(step, repeat)
    spt = sorted(times)[len(times) // 2]
    params = count_params(model)
    tps = batch * N / spt
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in _device_name()), None)
    return {"kind": "training", "model": name, "batch": batch, "tokens_per_sample": N, "precision": precision,
            "compiled": compile_model, "checkpointing": checkpointing, "scan": scan, "scan_fn": scan_fn, "scan_chunk": scan_chunk,
            "mamba2_kernels": has_mamba and kernels and not compile_model and device.type == "cuda",
            "image_size": image_size, "seconds_per_step": spt, "tokens_per_s": tps, "params": params,
            "mfu": 6 * params * tps / (peak * 1e12) if peak else None,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else None}


def scaling_plot(records: list[dict], path: Path) -> Path:
    """Cost per token (us) and peak memory against tokens per image, one line per model and path."""
    from .train.logging import draw_curves
    rows = []
    for r in records:
        if r["kind"] == "generation" and r.get("image_size"):
            split = f"{r['model']}:{r['path']}"
            rows.append({"step": r["tokens"], "split": split, "name": "us_per_token",
                         "value": r["us_per_token"], "wall_time": 0.0})
            if r.get("peak_gib") is not None:
                rows.append({"step": r["tokens"], "split": split, "name": "peak_gib", "value": r["peak_gib"],
                             "wall_time": 0.0})
        elif r["kind"] == "training" and r.get("image_size"):
            rows.append({"step": r["tokens_per_sample"], "split": r["model"], "name": "training_tokens_per_s",
                         "value": r["tokens_per_s"], "wall_time": 0.0})
    img = draw_curves(rows, title="cost per token, peak memory and training throughput vs tokens per image",
                      x_label="tokens per image")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


# The seeds' speed claims: (claim, ours, theirs, batch) on each side's fastest generation path
CLAIMS = [("AiM paper: AiM decodes faster than a transformer with a KV cache", "aim-l", "gpt-l", 16),
          ("M-VAR paper: M-VAR-d24 is 1.2x faster than VAR-d30", "mvar-d24", "var-d30", 16),
          ("ARPG abstract: over 20x the throughput of LlamaGen and over 75% less memory", "arpg-l", "gpt-l", 64)]


def claims_table(records: list[dict]) -> list[str]:
    """Each claim with both sides measured in this run: holds / does not hold, by how much."""
    best = {}
    for r in records:
        if r["kind"] == "generation" and not r.get("image_size"):
            key = (r["model"], r["batch"])
            if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                best[key] = r
    lines = []
    for claim, ours, theirs, batch in CLAIMS:
        a, b = best.get((ours, batch)), best.get((theirs, batch))
        if a is None or b is None:
            continue
        ratio = a["images_per_s"] / b["images_per_s"]
        need = {"aim-l": 1.0, "mvar-d24": 1.2, "arpg-l": 20.0}[ours]
        memory = ""
        if ours == "arpg-l" and a.get("peak_gib") and b.get("peak_gib"):
            saved = 1 - a["peak_gib"] / b["peak_gib"]
            memory = f"; memory {a['peak_gib']:.1f} vs {b['peak_gib']:.1f} GiB ({saved:.0%} less, claim > 75%)"
        verdict = "holds" if ratio > need else "does not hold"
        lines.append(f"| {claim} | {ours} {a['path']} {a['images_per_s']:.1f} vs {theirs} {b['path']} "
                     f"{b['images_per_s']:.1f} img/s (batch {batch}) | {ratio:.2f}x (claim {need:g}x){memory} | "
                     f"{verdict} |")
    return (["", "| claim | measured (fastest path of each side) | ratio | verdict |", "|---|---|---|---|"] + lines
            if lines else [])


def to_markdown(records: list[dict], meta: dict) -> str:
    lines = [f"# Benchmark: {meta['device']}", "", f"torch {meta['torch']}; command: `{meta['command']}`", ""]
    gen = [r for r in records if r["kind"] in ("generation", "sample_many")]
    if gen:
        lines += ["| model | path | batch | cfg | precision | s/batch | images/s | peak GiB |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['path']} | {r['batch']} | {r['cfg']} | {r['precision']} | "
                  f"{r['seconds_per_batch']:.3f} | {r['images_per_s']:.1f} | {r['peak_gib'] or 0:.1f} |" for r in gen]
    scaled = [r for r in gen if r.get("image_size")]
    if scaled:
        lines += ["", "| scaling: model | path | image | tokens | batch | s/image | us/token | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['path']} | {r['image_size']} | {r['tokens']} | {r['batch']} | "
                  f"{r['seconds_per_batch'] / r['batch']:.4f} | {r['us_per_token']:.2f} | {r['peak_gib'] or 0:.2f} |"
                  for r in scaled]
    lines += claims_table(records)
    dec = [r for r in records if r["kind"] == "tokenizer_decode"]
    if dec:
        lines += ["", "| tokenizer decode | batch | precision | s/batch | images/s |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['precision']} | {r['seconds_per_batch']:.4f} | "
                  f"{r['images_per_s']:.0f} |" for r in dec]
    tr = [r for r in records if r["kind"] == "training"]
    if tr:
        lines += ["", "| training | batch x tokens | precision | compiled | checkpointing | Mamba2 scan | Triton conv/norm "
                  "| s/step | tokens/s | MFU | peak GiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} x {r['tokens_per_sample']} | {r['precision']} | {r['compiled']} | "
                  f"{r.get('checkpointing', False)} | {r.get('scan_fn') or r.get('scan', 'reference')}, chunk {r.get('scan_chunk', 64)} | "
                  f"{r.get('mamba2_kernels', False)} | "
                  f"{r['seconds_per_step']:.3f} | {r['tokens_per_s']:,.0f} | "
                  f"{(r['mfu'] or 0) * 100:.1f}% | {r['peak_gib'] or 0:.1f} |" for r in tr]
    return "\n".join(lines) + "\n"


def _measure(job: dict) -> dict:
    device = torch.device(job["device"])
    kind = job.pop("kind")
    fn = {"generation": bench_generation, "decode": bench_decode, "training": bench_training}[kind]
    return fn(**{**job, "device": device})


def merge_results(paths: list[str], out: Path) -> Path:
    """Records of several bench JSON files (e.g. one image size per device call) in one table and plot.
    They must come from one device: rows timed on different GPUs are not side by side."""
    records, errors, devices, commands = [], [], set(), []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            records += data["records"]
            devices.add(data["meta"]["device"])
            commands.append(data["meta"]["command"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--merge {p}: not a bench result ({e.__class__.__name__}: {e}); give the .json "
                             "files `mambagen bench --out` wrote") from None
        errors += data.get("errors", [])
    if len(devices) > 1:
        raise ValueError(f"--merge: results from different devices ({', '.join(sorted(devices))}); merge the runs "
                         "of one device at a time")
    records.sort(key=lambda r: (r["model"], r.get("path", ""), r.get("image_size") or 0, r["batch"]))
    meta = {"device": devices.pop(), "torch": records[0]["torch"] if records else torch.__version__,
            "command": "merged from " + "; ".join(f"{c} [{p}]" for c, p in zip(commands, paths))}
    sizes = {r["image_size"] for r in records if r.get("image_size")}   # a curve needs two sizes at least
    return write_results(out, meta, records, errors, plot=len(sizes) > 1)


def write_results(out: Path, meta: dict, records: list[dict], errors: list[str], plot: bool) -> Path:
    """OUT.json, OUT.md (the table, with any failures) and, with `plot`, OUT_scaling.png; the table printed."""
    write_json(out.with_suffix(".json"), {"meta": meta, "records": records, "errors": errors})
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(to_markdown(records, meta) + ("\nFailed:\n" + "\n".join(f"- {e}" for e in errors) if errors else ""))
    if plot:
        print(f"wrote {scaling_plot(records, out.with_name(out.name + '_scaling.png'))}")
    print(to_markdown(records, meta))
    return out


def run_bench(args) -> Path:
    """Each measurement runs in its own process: a failure (or a poisoned CUDA context after a
    failed graph capture) loses that one number only, and peak memory is per measurement."""
    import subprocess

    if args.single:
        print("RESULT " + json.dumps(_measure(json.loads(args.single))), flush=True)
        return Path(args.out)
    if args.merge:
        return merge_results(args.merge, Path(args.out))
    from .device import resolve_device
    device = str(resolve_device(args.device))
    meta = {"device": _device_name(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    jobs = []
    sizes = args.image_size or [None]
    for spec in args.generate:
        name, path = (spec.split(":") + ["reference"])[:2]
        jobs += [dict(kind="generation", name=name, batch=b, precision=args.precision, path=path, cfg_scale=args.cfg,
                      repeat=args.repeat, image_size=size) for size in sizes for b in args.batch]
    jobs += [dict(kind="decode", tokenizer=t, batch=args.batch[0], precision=args.precision, repeat=args.repeat)
             for t in args.decode]
    scans = {"ref": "reference", "torchscan": "fast", "triton": "triton"}
    for spec in args.train:   # MODEL[:compile][:ckpt][:ref|:torchscan|:triton][:kernels][:chunkN]
        name, *opts = spec.split(":")
        unknown = [o for o in opts if o not in ("compile", "ckpt", "kernels", *scans)
                   and not (o.startswith("chunk") and o[5:].isdigit() and int(o[5:]) > 0)]
        if unknown:
            raise ValueError(f"--train {spec}: unknown option(s) {', '.join(unknown)}; use compile, ckpt, ref, "
                             "torchscan, triton, kernels or chunkN (N > 0)")
        chunk = next((int(o[5:]) for o in opts if o.startswith("chunk")), 64)
        jobs += [dict(kind="training", name=name, batch=args.train_batch, precision=args.precision,
                      repeat=args.repeat, compile_model="compile" in opts, checkpointing="ckpt" in opts,
                      scan=next((scans[o] for o in opts if o in scans), "auto"), scan_chunk=chunk,
                      kernels="kernels" in opts, image_size=size)
                 for size in sizes]
    records, errors = [], []
    for job in jobs:
        job["device"] = device
        r = subprocess.run([sys.executable, "-m", "mambagen", "bench", "--single", json.dumps(job)],
                           capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode == 0 and line:
            rec = {**json.loads(line[7:]), "device": meta["device"], "torch": meta["torch"]}
            records.append(rec)
            print(json.dumps({k: v for k, v in rec.items() if k != "repeats"}), flush=True)
        else:
            errors.append(f"{job}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            print("FAILED", errors[-1], flush=True)
        write_json(Path(args.out).with_suffix(".json"), {"meta": meta, "records": records, "errors": errors})
    return write_results(Path(args.out), meta, records, errors, plot=bool(args.image_size and len(args.image_size) > 1))
