"""The demo's README grid on CPU: token generation with the Mamba2 state updated in place (`ssd_step_`,
what decoding takes now) against the copying reference step (`ssd_step`), side by side in one run,
alternating, and the tokenizer's decoding of the same tokens.

    python bench/cpu_demo_decode.py bench/results/cpu_demo_decode [--repeat 3]

Writes OUT.json and OUT.md (the machine, the command, every timing, whether the tokens agree).
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

import mambagen
from mambagen.io import atomic_path
from mambagen.layers import mamba2, ssd_ref
from mambagen.sample.config import SamplingConfig
from mambagen.sample.pipeline import Sampler


def copying_step(state, x, dt, A, B, C):
    """The step before: a new state from `ssd_step`, copied into the cache."""
    y, new = ssd_ref.ssd_step(state, x, dt, A, B, C)
    state.copy_(new)
    return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output path without extension")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pipe = mambagen.load("demo")
    sampler = Sampler(pipe.generator, pipe.tokenizer, SamplingConfig(cfg_scale=4.0))
    labels = torch.arange(pipe.generator.config.num_classes)
    steps = {"in place (ssd_step_)": ssd_ref.ssd_step_, "copying (ssd_step + copy_)": copying_step}
    times, tokens = {k: [] for k in steps}, {}
    for _ in range(args.repeat):
        for name, fn in steps.items():
            mamba2.ssd_step_ = fn
            t0 = time.perf_counter()
            tokens[name] = sampler.result(labels, torch.Generator().manual_seed(0))
            times[name].append(time.perf_counter() - t0)
    mamba2.ssd_step_ = ssd_ref.ssd_step_
    t0 = time.perf_counter()
    sampler.family.sampler.images(pipe.generator, pipe.tokenizer, tokens["in place (ssd_step_)"])
    decode = time.perf_counter() - t0
    a, b = tokens.values()
    report = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
              "images": len(labels), "tokens_per_image": a.shape[1], "cfg": 4.0,
              "token_generation_s": times, "best_s": {k: min(v) for k, v in times.items()},
              "tokenizer_decode_s": decode, "same_tokens": bool(torch.equal(a, b))}
    with atomic_path(args.out + ".json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    rows = "\n".join(f"| {k} | {' / '.join(f'{t:.2f}' for t in v)} | {min(v):.2f} |" for k, v in times.items())
    md = (f"# The demo's {len(labels)}-image grid on CPU: the Mamba2 decoding step\n\n`{report['command']}` on "
          f"{report['machine']}.\n\n| step | token generation, each run (s) | best (s) |\n|---|---|---|\n{rows}\n\n"
          f"Tokenizer decoding of the same tokens: {decode:.2f} s. Same tokens: {report['same_tokens']}.\n")
    with atomic_path(args.out + ".md") as tmp:
        tmp.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
