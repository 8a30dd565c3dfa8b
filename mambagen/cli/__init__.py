"""The `mambagen` command line: one module per command group, the shared argument blocks in `common`.

    info      info                      sample    sample, edit
    convert   convert                   evaluate  sample-many, eval, eval-nll, eval-tokenizer, train-judge, judge-samples
    data      data emoji, tokenize      train     train-tokenizer, train
    bench     bench

Handlers parse, call the library and print; bad input raises ValueError (or a CheckpointError), which
`main` prints as one line and turns into exit status 2; a diverged training run prints its one line
(naming the last good checkpoint) and exits 1.
"""
from __future__ import annotations

import argparse
import sys

from ..io import CheckpointError
from ..train.plumbing import TrainingDiverged
from . import bench, convert, data, evaluate, info, sample, train

GROUPS = (info, sample, convert, data, train, bench, evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mambagen", description="Class-conditional autoregressive image generation "
                                "with Mamba (AiM) and its baselines.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (CheckpointError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
