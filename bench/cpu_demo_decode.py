"""The demo's README grid on CPU: three ways of running the Mamba2 decoding step, side by side in one run,
alternating, and the tokenizer's decoding of the same tokens.

* token history + tap-by-tap conv: what CPU decoding takes now (`ssd_history`, `Mamba2._conv_step`)
* state in place + tap-by-tap conv: the recurrent state (`ssd_step_`, `ssm_form="state"`)
* state in place + concatenated conv window: the step before both changes

    python bench/cpu_demo_decode.py bench/results/cpu_demo_decode [--repeat 3]

Writes OUT.json and OUT.md (the machine, the command, every timing, whether the tokens agree).
"""
import argparse
import functools
import json
import os
import platform
import sys
import time

import torch

import mambagen
from mambagen.io import atomic_path
from mambagen.layers.mamba2 import Mamba2
from mambagen.sample.config import SamplingConfig
from mambagen.sample.pipeline import Sampler


def window_conv_step(self, conv, xBC):
    """The conv step before: the window concatenated along its last dimension, summed over it."""
    window = torch.cat([conv, xBC[:, :, None].to(conv.dtype)], dim=2)   # (B, conv_dim, d_conv)
    conv.copy_(window[:, :, 1:])
    out = (window * self.conv1d.weight[:, 0]).sum(-1)
    return out if self.conv1d.bias is None else out + self.conv1d.bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output path without extension")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pipe = mambagen.load("demo")
    model = pipe.generator
    sampler = Sampler(model, pipe.tokenizer, SamplingConfig(cfg_scale=4.0))
    labels = torch.arange(model.config.num_classes)
    tap_conv, auto_cache = Mamba2._conv_step, type(model).allocate_cache
    variants = {"token history + tap-by-tap conv (now)": ("auto", tap_conv),
                "state in place + tap-by-tap conv": ("state", tap_conv),
                "state in place + concatenated window conv (before)": ("state", window_conv_step)}
    times, tokens = {k: [] for k in variants}, {}
    for _ in range(args.repeat):
        for name, (form, conv_step) in variants.items():
            model.allocate_cache = functools.partial(auto_cache, model, ssm_form=form)
            Mamba2._conv_step = conv_step
            t0 = time.perf_counter()
            tokens[name] = sampler.result(labels, torch.Generator().manual_seed(0))
            times[name].append(time.perf_counter() - t0)
    del model.allocate_cache
    Mamba2._conv_step = tap_conv
    now = next(iter(tokens.values()))
    t0 = time.perf_counter()
    sampler.family.sampler.images(model, pipe.tokenizer, now)
    decode = time.perf_counter() - t0
    agree = {k: float((t == now).float().mean()) for k, t in tokens.items()}
    report = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
              "images": len(labels), "tokens_per_image": now.shape[1], "cfg": 4.0,
              "token_generation_s": times, "best_s": {k: min(v) for k, v in times.items()},
              "tokenizer_decode_s": decode, "tokens_equal_to_now": agree}
    with atomic_path(args.out + ".json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    rows = "\n".join(f"| {k} | {' / '.join(f'{t:.2f}' for t in v)} | {min(v):.2f} | {agree[k]:.3f} |"
                     for k, v in times.items())
    md = (f"# The demo's {len(labels)}-image grid on CPU: the Mamba2 decoding step\n\n`{report['command']}` on "
          f"{report['machine']}.\n\n| step | token generation, each run (s) | best (s) | tokens as now |\n|---|---|---|---|\n"
          f"{rows}\n\nTokenizer decoding of the same tokens: {decode:.2f} s. The forms differ in rounding only "
          "(float32 sums in another order), which can flip a near-tied draw.\n")
    with atomic_path(args.out + ".md") as tmp:
        tmp.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
