"""official:NAME through a Hugging Face cache made here (the hub's own layout), offline: tiny official-format
files cut from the golden fixtures stand in for the releases, one per family. Each loads, converts once,
samples with the catalogue's setting and holds exactly the weights the parity runner checks against the
official outputs (the AiM one reproduces the fixture's logits itself)."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mambagen
from mambagen import releases
from mambagen.cli import main
from parity import DEFAULT_DIR, load_fixture

pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put(cache: Path, repo: str, files: dict[str, bytes | Path]) -> None:
    """repo's files in the hub cache layout: models--ORG--NAME/{refs/main, snapshots/<commit>/<file>}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snap / name).write_bytes(data.read_bytes() if isinstance(data, Path) else data)


def _pt(tmp: Path, state: dict, name: str, wrap: bool = True) -> Path:
    path = tmp / name
    torch.save({"model": state} if wrap else state, path)
    return path


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A hub cache holding one tiny release per family, and catalogue entries pointing at them."""
    cache, scratch = tmp_path / "hf", tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MAMBAGEN_CACHE", str(tmp_path / "mg"))
    fx = {n: load_fixture(DEFAULT_DIR / f"{n}.json") for n in
          ("aim_adaln_group", "llamagen_gpt", "arpg", "var", "mvar_l2norm", "llamagen_vq", "var_vqvae")}
    vq, vae = fx["llamagen_vq"], fx["var_vqvae"]
    # the GPT/ARPG fixtures model 64 codes: a VQ of that size in the official layout (random weights: the
    # tokenizer only decodes; its own parity is llamagen_vq's)
    from mambagen.convert.llamagen_vq import vq_config_from_official
    from mambagen.tokenizers.vq import VQModel
    vq64_config = {**vq.meta["config"], "codebook_size": 64}
    vq64 = VQModel(vq_config_from_official(vq64_config, vq.meta["arch_overrides"]))
    put(cache, "test/vq", {"vq_tiny.pt": _pt(scratch, vq64.state_dict(), "vq_tiny.pt")})
    put(cache, "test/vae", {"vae_tiny.pth": _pt(scratch, vae.state(), "vae_tiny.pth", wrap=False)})
    vq_kw = dict(tokenizer=("test/vq", "vq_tiny.pt"), tokenizer_config=vq64_config,
                 tokenizer_options={"arch_overrides": vq.meta["arch_overrides"]})
    vae_kw = dict(tokenizer=("test/vae", "vae_tiny.pth"), tokenizer_config=vae.meta["config"],
                  tokenizer_options={"arch_overrides": vae.meta["arch_overrides"]})

    aim = fx["aim_adaln_group"]
    state = {f"mamba.{k}": v.contiguous() for k, v in aim.state().items() if k != "lm_head.weight"}
    state.update({f"vqvae.{k}": v.contiguous() for k, v in vq.state().items()})
    save_file(state, str(scratch / "model.safetensors"))
    put(cache, "test/aim-tiny", {"config.json": json.dumps(aim.meta["config"]).encode(),
                                 "model.safetensors": scratch / "model.safetensors"})
    put(cache, "test/gpt", {"c2i_tiny.pt": _pt(scratch, fx["llamagen_gpt"].state(), "c2i_tiny.pt")})
    put(cache, "test/arpg", {"arpg_tiny.pt": _pt(scratch, fx["arpg"].state(), "arpg_tiny.pt")})
    put(cache, "test/var", {"var_tiny.pth": _pt(scratch, fx["var"].state(), "var_tiny.pth", wrap=False)})
    put(cache, "test/mvar", {"d2.pth": _pt(scratch, fx["mvar_l2norm"].state(), "d2.pth", wrap=False)})

    def entry(name, family, repo, files, sampling, official=None, **kw):
        return releases.Release(name, family, "", repo, files, kw.pop("tokenizer", None), {"fid": 9.9},
                                "a test", sampling, "a test", official_config=official, **kw)

    table = {
        "aim-tiny": entry("aim-tiny", "aim", "test/aim-tiny", ("config.json", "model.safetensors"),
                          {"cfg_scale": 3.0, "top_k": 5}, convert_options={"vq_config": vq.meta["config"],
                                                                           "vq_arch_overrides": vq.meta["arch_overrides"]}),
        "gpt-tiny": entry("gpt-tiny", "gpt", "test/gpt", ("c2i_tiny.pt",), {"cfg_scale": 2.0},
                          fx["llamagen_gpt"].meta["config"], **vq_kw),
        "arpg-tiny": entry("arpg-tiny", "arpg", "test/arpg", ("arpg_tiny.pt",), {"cfg_scale": 2.0, "steps": 4},
                           fx["arpg"].meta["config"], **vq_kw),
        "var-tiny": entry("var-tiny", "var", "test/var", ("var_tiny.pth",), {"cfg_scale": 2.5, "top_k": 9},
                          fx["var"].meta["config"], **vae_kw),
        "mvar-tiny": entry("mvar-tiny", "mvar", "test/mvar", ("d2.pth",), {"cfg_scale": 2.5},
                           fx["mvar_l2norm"].meta["config"], **vae_kw),
        "missing": entry("missing", "gpt", "test/not-downloaded", ("c2i_none.pt",), {}, **vq_kw),
    }
    monkeypatch.setattr(releases, "RELEASES", table)
    return fx


@pytest.mark.parametrize("name,fixture", [("aim-tiny", "aim_adaln_group"), ("gpt-tiny", "llamagen_gpt"),
                                          ("arpg-tiny", "arpg"), ("var-tiny", "var"), ("mvar-tiny", "mvar_l2norm")])
def test_official_names_load_offline_convert_once_and_sample_as_published(hub, tmp_path, monkeypatch, capsys,
                                                                          name, fixture):
    pipe, meta = mambagen.load(f"official:{name}", with_meta=True)
    assert isinstance(pipe, mambagen.Pipeline) and meta["sampling"] == releases.RELEASES[name].sampling
    fx = hub[fixture]
    # the same weights the parity runner builds from the fixture (and checks against the official outputs)
    from mambagen.models.registry import get_family
    family = get_family(releases.RELEASES[name].family)
    state = {k: v for k, v in fx.state().items() if k != "lm_head.weight"} if fx.kind == "aim" else fx.state()
    reference, _ = family.convert(state, fx.meta["config"], tokenizer=pipe.tokenizer,
                                  **({} if fx.kind != "aim" else releases.RELEASES[name].convert_options))
    ours, theirs = pipe.generator.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    if fixture == "aim_adaln_group":      # and the official logits themselves
        logits, _ = pipe.generator(fx.input("codes"), fx.input("labels"))
        torch.testing.assert_close(logits, fx.tensors["out.logits"], atol=2e-4, rtol=1e-3)
    # converted once: a second load reads the cache without converting
    monkeypatch.setattr(releases, "convert_release", lambda *a, **k: pytest.fail("converted twice"))
    out = tmp_path / "s.png"
    assert main(["sample", "--model", f"official:{name}", "--classes", "1", "--per-class", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert out.exists() and f"cfg {releases.RELEASES[name].sampling['cfg_scale']}" in said
    card = (Path(os.environ["MAMBAGEN_CACHE"]) / "official" / name / "README.md").read_text()
    assert "library_name: mambagen" in card and "Published scores" in card and "sha256:" in card


def test_missing_files_are_one_line_naming_them_and_the_fetch_command(hub, tmp_path, capsys):
    assert main(["sample", "--model", "official:missing", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test/not-downloaded/c2i_none.pt" in err
    assert "hf download test/not-downloaded c2i_none.pt" in err and "HF_HUB_OFFLINE" in err
    assert main(["sample", "--model", "official:nope", "--out", str(tmp_path / "s.png")]) == 2
    assert "not in the catalogue" in capsys.readouterr().err


def test_hf_repo_in_our_format_and_export(hub, tmp_path, capsys):
    exported = tmp_path / "export"
    assert main(["export", "demo", str(exported)]) == 0
    assert {p.name for p in exported.iterdir()} == {"config.json", "model.safetensors", "tokenizer", "README.md",
                                                     ".gitattributes"}
    files = {p.relative_to(exported).as_posix(): p for p in exported.rglob("*") if p.is_file()}
    put(Path(os.environ["HF_HUB_CACHE"]), "someone/emoji", {})
    snap = Path(os.environ["HF_HUB_CACHE"]) / "models--someone--emoji" / "snapshots" / COMMIT
    for rel, p in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes(p.read_bytes())
    pipe = mambagen.load("hf:someone/emoji")
    assert torch.equal(pipe.generator.tok_emb.weight, mambagen.load("demo").generator.tok_emb.weight)
    assert main(["export", "demo", str(exported)]) == 2                       # not a new folder
    assert "not empty" in capsys.readouterr().err


def test_the_catalogue_lists_every_family_with_sources(capsys):
    families = {r.family for r in releases.RELEASES.values()}
    assert families == {"aim", "arpg", "var", "mvar", "gpt"}
    for r in releases.RELEASES.values():
        assert r.published["fid"] > 0 and r.published_source and r.sampling_source
        mambagen.sample.config.SamplingConfig(**r.sampling)                     # a valid setting
        from mambagen.models.registry import REGISTRY
        assert r.size in REGISTRY and REGISTRY[r.size][0].name == r.family
    assert main(["info", "--official"]) == 0
    out = capsys.readouterr().out
    assert "official:NAME" in out and "aim-l" in out and "hp-l33/aim-large" in out and "2.83" in out
