"""The released checkpoints of the papers, by name: `official:<name>` anywhere a model directory goes.

Each `Release` is one row of a paper's or repository's table: where its files are (a Hugging Face repo),
which of our sizes and tokenizer it is, the published scores and the sampling settings that produced
them, each with its source. `fetch(name)` resolves the files through `huggingface_hub` (the optional
`hub` extra; the user's HF cache; `HF_HUB_OFFLINE` honoured), converts them once through the family's
converter into a local cache (atomic: a second call converts nothing) and records the published setting
as the checkpoint's recommendation, so `mambagen sample --model official:aim-l` samples as published.

Sampling settings are in our terms: `cfg_scale` is the guidance scale with 1 = off everywhere, so VAR's
and M-VAR's official `cfg=1.5` is our 2.5 (see sample/scales.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .card import write_model_card
from .io import CheckpointError

AIM_README = "hp-l33/AiM README (Model Zoo)"
AIM_PAPER = "AiM paper (arXiv 2408.12245), Table 2"
AIM_SAMPLING = "hp-l33/AiM README, Inference: generate(temperature=1, top_p=0.98, top_k=600, cfg_scale=5)"
ARPG_ZOO = "hp-l33/ARPG README (Model Zoo)"
ARPG_EVAL = "hp-l33/ARPG README, Evaluation (sample_c2i_ddp.py --sample-schedule arccos --step 64)"
VAR_README = "FoundationVision/VAR README (VAR zoo)"
VAR_SAMPLING = ("FoundationVision/VAR README, Sampling: cfg=1.5, top_p=0.96, top_k=900, more_smooth=False "
                "(official cfg 1.5 = our 2.5)")
MVAR_PAPER = "M-VAR paper (arXiv 2411.10433), Table 2"
MVAR_SAMPLING = ("OliverRensu/MVAR README, Inference: cfg=1.5, top_p=0.96, top_k=900, more_smooth=False "
                 "(official cfg 1.5 = our 2.5)")
LLAMAGEN_README = "FoundationVision/LlamaGen README (AR models)"
LLAMAGEN_SAMPLING = "FoundationVision/LlamaGen GETTING_STARTED.md, Sampling (top-k 0, top-p 1.0, temperature 1.0)"

LLAMAGEN_VQ = ("FoundationVision/LlamaGen", "vq_ds16_c2i.pt")
VAR_VAE = ("FoundationVision/var", "vae_ch160v4096z32.pth")


@dataclass(frozen=True)
class Release:
    name: str                          # official:<name>
    family: str
    size: str                          # our registered size
    repo: str                          # Hugging Face repo of the weights
    files: tuple[str, ...]             # in `repo`; a directory release (AiM) lists all of its files
    tokenizer: tuple[str, str] | None  # (repo, file) of the tokenizer; None: inside the release
    published: dict                    # fid, is, precision, recall as published
    published_source: str
    sampling: dict                     # SamplingConfig fields that produced them
    sampling_source: str
    resolution: int = 256
    official_config: dict | None = None   # official config for the converter (None: read or inferred)
    convert_options: dict = field(default_factory=dict)   # more converter keywords (tiny stand-ins in tests)
    tokenizer_config: dict | None = None    # the tokenizer's official config (None: the released one's)
    tokenizer_options: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def directory(self) -> bool:
        """A release that is a directory (config.json + weights), not one weight file."""
        return "config.json" in self.files


def _aim(name, size, repo, fid, is_, pre, rec):
    return Release(name, "aim", size, repo, ("config.json", "model.safetensors"), None,
                   {"fid": fid, "is": is_, "precision": pre, "recall": rec}, f"{AIM_PAPER}; {AIM_README}",
                   {"cfg_scale": 5.0, "temperature": 1.0, "top_k": 600, "top_p": 0.98}, AIM_SAMPLING,
                   notes="the paper does not list its FID sampling settings; these are the README's")


def _arpg(name, size, file, zoo_cfg, cfg, fid, is_, expected):
    return Release(name, "arpg", size, "hp-l33/ARPG", (file,), LLAMAGEN_VQ, {"fid": fid, "is": is_},
                   f"{ARPG_ZOO} (CFG {zoo_cfg}, 64 steps)",
                   {"cfg_scale": cfg, "steps": 64, "schedule": "arccos", "cfg_schedule": "linear"}, ARPG_EVAL,
                   notes=f"the README's evaluation command (arccos) expects FID about {expected}")


def _var(name, size, file, fid, is_=None, pre=None, rec=None, resolution=256):
    scores = {"fid": fid, **({"is": is_, "precision": pre, "recall": rec} if is_ else {})}
    return Release(name, "var", size, "FoundationVision/var", (file,), VAR_VAE, scores,
                   VAR_README + ("; IS/precision/recall: " + MVAR_PAPER if is_ else ""),
                   {"cfg_scale": 2.5, "top_k": 900, "top_p": 0.96, "more_smooth": False}, VAR_SAMPLING,
                   resolution=resolution)


def _mvar(name, size, file, fid, is_, pre, rec):
    return Release(name, "mvar", size, "OliverRen/M-VAR", (file,), VAR_VAE,
                   {"fid": fid, "is": is_, "precision": pre, "recall": rec}, MVAR_PAPER,
                   {"cfg_scale": 2.5, "top_k": 900, "top_p": 0.96, "more_smooth": False}, MVAR_SAMPLING)


def _gpt(name, size, file, fid, cfg, resolution=256, num_tokens=256):
    return Release(name, "gpt", size, "FoundationVision/LlamaGen", (file,), LLAMAGEN_VQ, {"fid": fid},
                   LLAMAGEN_README, {"cfg_scale": cfg, "top_k": 0, "top_p": 1.0, "temperature": 1.0},
                   LLAMAGEN_SAMPLING, resolution=resolution,
                   convert_options={"block_size": num_tokens},
                   notes="" if resolution == 256 else f"{resolution} px samples, evaluated resized to 256 px")


RELEASES: dict[str, Release] = {r.name: r for r in [
    _aim("aim-b", "aim-b", "hp-l33/aim-base", 3.52, 250.1, 0.83, 0.52),
    _aim("aim-l", "aim-l", "hp-l33/aim-large", 2.83, 244.6, 0.82, 0.55),
    _aim("aim-xl", "aim-xl", "hp-l33/aim-xlarge", 2.56, 257.2, 0.82, 0.57),
    _arpg("arpg-l", "arpg-l", "arpg_300m.pt", 4.5, 5.0, 2.44, 287, 2.38),
    _arpg("arpg-xl", "arpg-xl", "arpg_700m.pt", 6.0, 6.0, 2.10, 331, 2.02),
    _arpg("arpg-xxl", "arpg-xxl", "arpg_1b.pt", 7.5, 7.5, 1.94, 340, 1.91),
    _var("var-d16", "var-d16", "var_d16.pth", 3.55, 280.4, 0.84, 0.51),
    _var("var-d20", "var-d20", "var_d20.pth", 2.95, 302.6, 0.83, 0.56),
    _var("var-d24", "var-d24", "var_d24.pth", 2.33, 312.9, 0.82, 0.59),
    _var("var-d30", "var-d30", "var_d30.pth", 1.97, 323.1, 0.82, 0.59),
    _var("var-d36", "var-d36", "var_d36.pth", 2.63, resolution=512),
    _mvar("mvar-d16", "mvar-d16", "d16.pth", 3.07, 294.6, 0.84, 0.53),
    _mvar("mvar-d20", "mvar-d20", "d20.pth", 2.41, 308.4, 0.85, 0.58),
    _mvar("mvar-d24", "mvar-d24", "d24.pth", 1.93, 320.7, 0.83, 0.59),
    _mvar("mvar-d32", "mvar-d32", "d32.pth", 1.78, 331.2, 0.83, 0.61),
    _gpt("gpt-b", "gpt-b", "c2i_B_256.pt", 5.46, 2.0),
    _gpt("gpt-l", "gpt-l", "c2i_L_256.pt", 3.80, 2.0),
    _gpt("gpt-l-384", "gpt-l", "c2i_L_384.pt", 3.07, 2.0, resolution=384, num_tokens=576),
    _gpt("gpt-xl-384", "gpt-xl", "c2i_XL_384.pt", 2.62, 1.75, resolution=384, num_tokens=576),
]}
# ARPG's zoo lists CFG 4.5 for ARPG-L beside FID 2.44; its evaluation command (our recommendation) uses 5.0


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"official:{name} is not in the catalogue; known: {', '.join(RELEASES)} "
                         "(`mambagen info --official` lists them)")
    return RELEASES[name]


# ------------------------------------------------------------------------------------------ fetching
def cache_root() -> Path:
    """Where converted releases are kept: $MAMBAGEN_CACHE, else ~/.cache/mambagen/official."""
    return Path(os.environ.get("MAMBAGEN_CACHE") or Path.home() / ".cache" / "mambagen") / "official"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read at each call (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _missing(release: Release, files: list[tuple[str, str]], why: str) -> ValueError:
    fetch = "; ".join(f"hf download {repo} {file}" for repo, file in files)
    return ValueError(f"official:{release.name} needs {', '.join(f'{r}/{f}' for r, f in files)} ({why}); fetch "
                      f"them into the Hugging Face cache with: {fetch} (or without huggingface_hub, download "
                      f"them yourself and run `mambagen convert {release.family} FILE OUT`)")


def hub_file(repo: str, file: str, release: Release, needed: list[tuple[str, str]]) -> Path:
    """One file of a Hugging Face repo through the user's cache (offline: the cache only)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise _missing(release, needed, "huggingface_hub is not installed: pip install 'mambagen[hub]'") from None
    try:
        return Path(hf_hub_download(repo, file, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                    local_files_only=hub_offline()))
    except Exception as e:   # LocalEntryNotFoundError, a network error, a missing repo or file ...
        why = "not in the Hugging Face cache and HF_HUB_OFFLINE is set" if hub_offline() else \
            f"could not download: {type(e).__name__}"
        raise _missing(release, needed, why) from None


def fetch(name: str) -> Path:
    """The converted release `name` as one of our pipeline directories (converted on first use)."""
    release = get_release(name)
    out = cache_root() / release.name
    if (out / "config.json").is_file():
        return out
    needed = [(release.repo, f) for f in release.files] + ([release.tokenizer] if release.tokenizer else [])
    paths = [hub_file(repo, file, release, needed) for repo, file in needed]
    weights = paths[0].parent if release.directory else paths[0]
    tokenizer_file = paths[-1] if release.tokenizer else None
    return convert_release(release, weights, tokenizer_file, out)


def convert_release(release: Release, weights: Path, tokenizer_file: Path | None, out: Path) -> Path:
    """Convert a release's files through its family's converter into `out` (written beside it, then renamed),
    with the published setting as its recommendation and a model card."""
    from .checkpoint import save_model
    from .models.registry import get_family
    from .tokenizers import KINDS
    from .train.plumbing import replace_folder

    family = get_family(release.family)
    tokenizer = (KINDS[family.tokenizer].convert(tokenizer_file, release.tokenizer_config, **release.tokenizer_options)
                 if tokenizer_file is not None else None)
    try:
        model, tokenizer = family.convert(weights, release.official_config, tokenizer=tokenizer,
                                          **release.convert_options)
    except CheckpointError as e:
        raise CheckpointError(f"official:{release.name}: {e}") from None
    extra = {"source": f"https://huggingface.co/{release.repo}", "release": release.name,
             "sampling": release.sampling, "sampling_source": release.sampling_source,
             "published": release.published, "published_source": release.published_source,
             "resolution": release.resolution}

    def fill(folder: Path) -> None:
        save_model(model, folder, tokenizer=tokenizer, extra=extra)
        write_model_card(folder)

    out.parent.mkdir(parents=True, exist_ok=True)
    return replace_folder(out, fill)


def catalogue_lines() -> list[str]:
    """`mambagen info --official`: one line per release, its facts and sources."""
    lines = [f"  {'name':<12} {'ours':<9} {'files':<46} {'published':<34} setting"]
    for r in RELEASES.values():
        files = f"{r.repo}: {', '.join(r.files)}"
        scores = ", ".join(f"{k} {v}" for k, v in r.published.items())
        setting = ", ".join(f"{k} {v}" for k, v in r.sampling.items())
        lines.append(f"  {r.name:<12} {r.size:<9} {files[:46]:<46} {scores[:34]:<34} {setting}")
        tok = f"tokenizer {r.tokenizer[0]}/{r.tokenizer[1]}" if r.tokenizer else "tokenizer inside the release"
        lines.append(f"  {'':<12} {tok}; scores: {r.published_source}; setting: {r.sampling_source}"
                     + (f"; {r.notes}" if r.notes else ""))
    return lines
