"""`mambagen bench`: generation / decode / training throughput, side by side (`mambagen.bench`)."""
from __future__ import annotations

import argparse

from .. import bench
from .common import FMT

DEFAULT_GENERATE = ("aim-l:reference", "aim-l:fast")
DEFAULT_DECODE = ("vq-f16",)


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("bench", help="generation / decode / training throughput, side by side",
                              formatter_class=FMT, description=bench.__doc__)
    p.add_argument("--generate", nargs="*", default=None,
                   help="MODEL[:PATH] entries to time generation for; PATH: reference (the readable loop), fast (the "
                        "family's fast path, compiled: AiM/GPT graphed steps, VAR/M-VAR/ARPG one graph per call), "
                        "graph (the fast path without compiling), sample-many (sample-many's token generation: the "
                        "fast path with per-row streams; record kind sample_many), fast-unfused (AiM without the "
                        "fused Triton kernels), fast-autotune (AiM/GPT with max-autotune matmuls). With none of "
                        "--generate/--decode/--train given: " + " ".join(DEFAULT_GENERATE) + " and --decode "
                        + " ".join(DEFAULT_DECODE) + "; a kind left out of a command that names another is not timed")
    p.add_argument("--decode", nargs="*", default=None, help="tokenizers whose decode to time")
    p.add_argument("--train", nargs="*", default=None, help="MODEL[:compile][:ckpt][:ref|:torchscan|:triton][:kernels][:chunkN] entries to time a "
                   "training step for (compile: torch.compile the model; ckpt: activation checkpointing; the Mamba2 "
                   "scan is chosen as in training unless named: ref the PyTorch reference, torchscan the compiled "
                   "tensor-core PyTorch scan, triton named; kernels: eager CUDA with the Triton conv+SiLU and "
                   "gated norm (opt-in); chunkN: Mamba2 scan chunk, default 64)")
    p.add_argument("--batch", type=int, nargs="+", default=[16], help="generation batch sizes (CFG doubles them)")
    p.add_argument("--train-batch", type=int, default=64, help="batch size of the timed training steps")
    p.add_argument("--image-size", type=int, nargs="*", default=None,
                   help="scaling: time every --generate/--train entry at these image sides (16x downsampling: 256 -> "
                        "256 tokens, 1024 -> 4096), position tables sized to the grid; writes OUT_scaling.png "
                        "(cost per token vs tokens); raster and random-order models")
    p.add_argument("--cfg", type=float, default=1.5, help="guidance scale (1 = off)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="weights and activations while timing")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats (the median is reported)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="time nothing: put the records of these bench results (one device) in one OUT.json/.md "
                        "and, for --image-size rows, one OUT_scaling.png")
    p.add_argument("--out", default="bench/results/bench", help="output path without extension (.json and .md)")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)   # internal: one measurement, as JSON
    p.set_defaults(fn=run)


def run(args):
    """`mambagen bench --train X` times training only: the default rows fill in only when no kind is named."""
    if args.generate is None and args.decode is None and args.train is None:
        args.generate, args.decode = list(DEFAULT_GENERATE), list(DEFAULT_DECODE)
    args.generate, args.decode, args.train = (v or [] for v in (args.generate, args.decode, args.train))
    return bench.run_bench(args)
