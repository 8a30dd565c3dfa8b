"""The `mambagen` command line: one module per command group, the shared argument blocks in `common`.

    info      info                      sample    sample, edit
    convert   convert, export           evaluate  sample-many, eval, eval-nll, eval-tokenizer, train-judge, judge-samples
    data      data emoji, tokenize      train     train-tokenizer, train
    bench     bench                     reproduce reproduce (sample-many -> eval -> a report beside the published)
    app       app (a local web page: generate, edit, model)

Handlers parse, call the library and print. `main` turns every expected failure into one line on
stderr and an exit status, never a traceback:
    2    bad input (ValueError, a CheckpointError, an unknown name)
    1    a diverged training run (naming the checkpoint to resume from), a failed write (a full disk)
    130  / 143  SIGINT / SIGTERM: training writes a checkpoint and prints the command that resumes it;
         other commands stop (sample-many keeps its finished shards; every file is written atomically)
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys

from .. import __version__
from ..io import CheckpointError, WriteError
from ..train.guard import TrainingInterrupted
from ..train.plumbing import TrainingDiverged
from . import app, bench, convert, data, evaluate, info, reproduce, sample, train
from .common import FMT

GROUPS = (info, sample, convert, data, train, bench, evaluate, reproduce, app)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mambagen", description="Class-conditional autoregressive image generation "
                                "with Mamba (AiM) and its baselines.",
                                formatter_class=FMT)
    p.add_argument("--version", action="version", version=f"mambagen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training: stop like Ctrl-C, with the shell's status for it."""


def _terminate(signum, frame):
    raise Terminated()


def resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--overwrite"]
    return "mambagen " + " ".join(shlex.quote(a) for a in args + ([] if "--resume" in args else ["--resume"]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    old = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        args.fn(args)
    except (CheckpointError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except (TrainingDiverged, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"{e}; continue with: {resume_command(argv)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("\ninterrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return 0


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
