"""What a Hugging Face user expects of our directories: a model card, a push-ready export, `hf:` names.

    write_model_card(dir)    dir/README.md: the config, source, license, scores and sampling setting
    export(dir, out)         out/: the directory as it would be pushed (weights, config.json, README.md)
    resolve_hf("ORG/REPO")   a repo in our format (or an official AiM release) through the HF cache
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .io import CheckpointError, atomic_path, read_json

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


def export(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A push-ready copy of checkpoint directory `src` (`huggingface-cli upload REPO OUT`): its weights
    and config.json as they are (digests verified first), a model card, and nothing else."""
    from .checkpoint import load, resolve
    from .train.plumbing import replace_folder
    src, out = resolve(src), Path(out)
    load(src)                                              # verifies digests, types and finiteness
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: choose a new folder for the export")
    meta = read_json(src / "config.json")
    keep = ["config.json", *(meta.get("files") or {})]
    if meta.get("tokenizer"):
        keep.append(meta["tokenizer"])

    def fill(folder: Path) -> None:
        for name in keep:
            s = src / name
            (shutil.copytree if s.is_dir() else shutil.copy2)(s, folder / name)
        write_model_card(folder)
        with atomic_path(folder / ".gitattributes") as tmp:
            tmp.write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")

    return replace_folder(out, fill)


def resolve_hf(spec: str) -> Path:
    """`hf:ORG/REPO`: a repo in our format (config.json "format": "mambagen"), used as it is, or an official
    AiM release (flat MambaConfig config.json + model.safetensors), converted once into the cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"hf:{spec} needs huggingface_hub: pip install 'mambagen[hub]'") from None
    from .releases import hub_offline
    offline = hub_offline()
    try:
        path = Path(snapshot_download(spec, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                      local_files_only=offline))
    except Exception as e:
        why = "not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline else type(e).__name__
        raise ValueError(f"hf:{spec}: cannot get the repo ({why}); fetch it with: hf download {spec}") from None
    if not (path / "config.json").is_file():
        raise CheckpointError(f"hf:{spec}: the repo has no config.json: not a mambagen or AiM directory; for "
                              "single-file releases use official:NAME or `mambagen convert FAMILY FILE OUT`")
    meta = read_json(path / "config.json")
    if meta.get("format") == "mambagen":
        return path
    if "ssm_cfg" in meta or "d_model" in meta:                 # an official AiM release directory
        from .releases import Release, cache_root, convert_release
        release = Release(spec.replace("/", "--"), "aim", "", spec, ("config.json", "model.safetensors"), None,
                          {}, "", {}, "")
        out = cache_root().parent / "hf" / spec.replace("/", "--")
        return out if (out / "config.json").is_file() else convert_release(release, path, None, out)
    raise CheckpointError(f"hf:{spec}: its config.json is neither ours nor an AiM release's; use official:NAME or "
                          "`mambagen convert`")
