"""Model cards: the README.md a Hugging Face user expects in a checkpoint directory (config, source,
license, published scores, the recommended sampling, files with their digests)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .io import atomic_path, read_json

KNOWN_LICENSES = {"FoundationVision/var": "mit", "FoundationVision/LlamaGen": "mit"}


def _table(rows: dict) -> list[str]:
    return ["| field | value |", "|---|---|"] + [f"| `{k}` | {json.dumps(v)} |" for k, v in rows.items()]


def model_card(meta: dict, files: dict[str, str]) -> str:
    """README.md text for a directory whose config.json is `meta`."""
    source = meta.get("source", "")
    repo = source.removeprefix("https://huggingface.co/")
    license_ = KNOWN_LICENSES.get(repo, "apache-2.0" if not source else "other")
    title = meta.get("release") or meta.get("family", "model")
    lines = ["---", "library_name: mambagen", f"license: {license_}",
             "tags: [image-generation, class-conditional, autoregressive, " + meta.get("family", "") + "]", "---", "",
             f"# {title} ({meta.get('family')}, mambagen format)", ""]
    if source:
        lines += [f"Converted from [{repo or source}]({source}) with `mambagen` (official weights, our layout; "
                  f"the weights are the source's and keep its license{'' if license_ != 'other' else ': see the source'}).", ""]
    name = f"official:{meta['release']}" if meta.get("release") else "path/to/this/folder"
    lines += ["```python", "import mambagen", f"pipe = mambagen.load({name!r})   # Pipeline(generator, tokenizer)",
              "```", "", "```bash", f"mambagen sample --model {name} --out samples.png", "```", ""]
    if meta.get("published"):
        lines += ["## Published scores", "", f"Source: {meta.get('published_source', '')}", ""] + \
            _table(meta["published"]) + [""]
    trained = {k: meta[k] for k in ("step", "val_bits_per_token", "run") if k in meta}
    if trained and not meta.get("release"):
        lines += ["## Training", "", "Trained with `mambagen train`.", ""] + _table(trained) + [""]
    if meta.get("sampling"):
        lines += ["## Recommended sampling (the command line's default)", "",
                  f"Source: {meta.get('sampling_source', 'the training run')}", ""] + _table(meta["sampling"]) + [""]
    lines += ["## Config", ""] + _table(meta.get("config", {})) + ["", "## Files", ""]
    lines += [f"- `{name}` {digest}" for name, digest in sorted(files.items())]
    lines += ["", "Every weight file is checked against its sha256 on load (`--no-verify` skips it); a tied "
              "tensor is stored once.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    meta = read_json(folder / "config.json")
    files = dict(meta.get("files") or {})
    if meta.get("tokenizer"):
        tok = read_json(folder / meta["tokenizer"] / "config.json")
        files.update({f"{meta['tokenizer']}/{k}": v for k, v in (tok.get("files") or {}).items()})
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text(model_card(meta, files))
    return folder / "README.md"
