"""The command line explains itself: every option has help, each default is said once, flags show none."""
import argparse
import re

import pytest

import mambagen
from mambagen.cli import build_parser, main


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_listed():
    names = {" ".join(c) for c, _ in COMMANDS}
    assert {"sample", "edit", "train", "train-tokenizer", "tokenize", "sample-many", "eval", "bench", "convert",
            "info", "data emoji"} <= names


@pytest.mark.parametrize("command,parser", COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_every_option_has_help_and_one_default(command, parser):
    missing = [a.option_strings for a in parser._actions
               if a.option_strings and not a.help and "-h" not in a.option_strings]
    assert not missing, f"options without help: {missing}"
    text = parser.format_help()
    for entry in re.split(r"\n(?=  -|\S)", text):          # one option (or heading) at a time
        assert entry.count("default") <= 1, entry
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    assert "DESIGN.md" not in text


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mambagen {mambagen.__version__}"


def test_info_says_no_kernel_runs_without_a_gpu(capsys):
    import torch
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert "Fast GPU kernels available" not in out and "no CUDA GPU" in out or "none" in out
