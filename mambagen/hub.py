"""What a Hugging Face user expects of our directories beyond the model card (`card.py`):

    export(dir, out)         out/: the directory as it would be pushed (weights, config.json, README.md)
    resolve_hf("ORG/REPO")   a repo in our format (or an official AiM release) through the HF cache
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .card import write_model_card
from .io import CheckpointError, atomic_path, read_json

def export(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A push-ready copy of checkpoint directory `src` (resolve names first: `sources.resolve`) (`huggingface-cli upload REPO OUT`): its weights
    and config.json as they are (digests verified first), a model card, and nothing else."""
    from .checkpoint import load
    from .train.plumbing import replace_folder
    src, out = Path(src), Path(out)
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
