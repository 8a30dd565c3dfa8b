"""Where a model comes from, by name: the one place `--model` strings are turned into directories.

    demo            the pipeline shipped in the package
    official:NAME   a released checkpoint of the catalogue (`releases.py`), fetched and converted once
    hf:ORG/REPO     a Hugging Face repo in our format, or an AiM release (`hub.py`)
    anything else   a path
"""
from __future__ import annotations

import os
from pathlib import Path

from . import checkpoint


def resolve(spec: str | os.PathLike) -> Path:
    text = str(spec)
    if text.startswith("official:"):
        from .releases import fetch
        return fetch(text[len("official:"):])
    if text.startswith("hf:"):
        from .hub import resolve_hf
        return resolve_hf(text[len("hf:"):])
    return checkpoint.resolve(spec)


def load(spec: str | os.PathLike, **kwargs):
    """`checkpoint.load` of whatever `spec` names (a Pipeline, a model or a tokenizer)."""
    return checkpoint.load(resolve(spec), **kwargs)
