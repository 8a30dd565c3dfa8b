"""Our checkpoint format round trip, clear errors for torn/foreign files, and the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import mambagen
from mambagen.cli import main
from mambagen.io import CheckpointError, atomic_path
from mambagen.sample.config import SamplingConfig


def _pair():
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    return gen.eval(), tok.eval()


def test_pipeline_round_trip_is_exact(tmp_path):
    gen, tok = _pair()
    mambagen.save_model(gen, tmp_path / "p", tokenizer=tok)
    pipe = mambagen.load(tmp_path / "p")
    assert isinstance(pipe, mambagen.Pipeline)
    for a, b in ((gen, pipe.generator), (tok, pipe.tokenizer)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert pipe.generator.head.weight is pipe.generator.tok_emb.weight  # still tied after loading


def test_torn_foreign_and_incomplete_checkpoints_are_clear_errors(tmp_path):
    gen, _ = _pair()
    d = mambagen.save_model(gen, tmp_path / "m")
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        mambagen.load(d)                       # the digest recorded in config.json
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        mambagen.load(d, verify=False)         # and the reader itself
    (d / "config.json").write_text(json.dumps({"d_model": 8}))
    with pytest.raises(CheckpointError, match="not a mambagen checkpoint"):
        mambagen.load(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        mambagen.load(d)


def test_weights_of_another_shape_name_the_keys(tmp_path):
    gen, _ = _pair()
    d = mambagen.save_model(gen, tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["d_model"] = 32
    meta["config"]["headdim"] = 16
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(50\).*ada_group.proj.bias: checkpoint \(384,\) vs model \(192,\)"):
        mambagen.load(d)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_cli_sample_from_checkpoint_writes_grid_and_npz(tmp_path, capsys):
    gen, tok = _pair()
    mambagen.save_model(gen, tmp_path / "p", tokenizer=tok)
    out, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    rc = main(["sample", "--model", str(tmp_path / "p"), "--classes", "1,3", "--per-class", "2",
               "--cfg", "1.5", "--top-k", "20", "--out", str(out), "--npz", str(npz), "--seed", "3"])
    assert rc == 0
    assert Image.open(out).size[0] > 64
    data = np.load(npz)
    assert data["arr_0"].shape == (4, 32, 32, 3) and data["arr_0"].dtype == np.uint8
    assert data["labels"].tolist() == [1, 1, 3, 3]
    # the same seed gives the same images
    main(["sample", "--model", str(tmp_path / "p"), "--classes", "1,3", "--per-class", "2", "--cfg", "1.5",
          "--top-k", "20", "--out", str(out), "--npz", str(tmp_path / "t.npz"), "--seed", "3"])
    assert np.array_equal(np.load(tmp_path / "t.npz")["arr_0"], data["arr_0"])


def test_cli_sample_default_grid_stays_small(tmp_path):
    """Without --classes / --per-class a grid holds at most 36 images: every class of a small model, as many of
    each as fit (9 classes: 4 each; the demo's 31: 1 each); a model of many classes gets 36 of them, spread evenly."""
    from mambagen.cli.sample import default_grid
    assert default_grid(None, None, 9) == (list(range(9)), 4)
    assert default_grid(None, None, 31) == (list(range(31)), 1)
    classes, per = default_grid(None, None, 1000)
    assert per == 1 and len(classes) == 36 and classes[0] == 0 and classes[-1] == 999 and classes == sorted(set(classes))
    assert default_grid([5, 7], None, 1000) == ([5, 7], 18) and default_grid(None, 2, 10) == (list(range(10)), 2)
    gen, tok = _pair()
    mambagen.save_model(gen, tmp_path / "p", tokenizer=tok)
    assert main(["sample", "--model", str(tmp_path / "p"), "--out", str(tmp_path / "g.png"),
                 "--npz", str(tmp_path / "g.npz")]) == 0
    labels = np.load(tmp_path / "g.npz")["labels"].tolist()
    n = gen.config.num_classes
    assert labels == [c for c in range(n) for _ in range(max(1, 36 // n))]


@pytest.mark.parametrize("argv, message", [
    (["sample", "--model", "aim-nope"], "neither a checkpoint directory nor a registered model"),
    (["sample", "--classes", "31"], "out of range: this model has 31 classes"),
    (["sample", "--model", "aim-tiny", "--classes", "10"], "out of range: this model has 10 classes"),
    (["sample", "--cfg", "-2"], "cfg scale must be >= 0"),
    (["sample", "--top-p", "0"], "top-p must be in"),
])
def test_cli_bad_input_is_named(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_info_lists_official_counts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for count in ("147,622,080", "349,760,000", "763,291,392", "1,335,944,192"):
        assert count in out
    assert "MISMATCH" not in out


def test_convert_official_aim_release_directory_then_sample(tmp_path):
    """An HF-style release (config.json + model.safetensors with mamba./vqvae. keys, tied head stored
    once) converts to our format and samples exactly like the original model."""
    from safetensors.torch import save_file

    from mambagen.convert import load_official_aim
    from mambagen.convert.aim import export_aim_state_dict
    from mambagen.sample.raster import generate_raster

    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    official_cfg = dict(d_model=64, n_layer=2, vocab_size=256, num_classes=10, num_tokens=64,
                        ssm_cfg={"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 16},
                        adaln_group=True, num_groups=2, d_intermediate=0, rms_norm=True)
    from mambagen.convert.aim import aim_config_from_official
    from mambagen.models.aim import AiM
    model = AiM(aim_config_from_official(official_cfg)).eval()
    state = {f"mamba.{k}": v for k, v in export_aim_state_dict(model.state_dict()).items() if k != "lm_head.weight"}
    state.update({f"vqvae.{k}": v for k, v in tok.state_dict().items()})
    release = tmp_path / "aim-release"
    release.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(release / "model.safetensors"))
    (release / "config.json").write_text(json.dumps(official_cfg))

    vq_cfg = dict(codebook_size=256, codebook_embed_dim=8, encoder_ch_mult=[1, 1, 2], decoder_ch_mult=[1, 1, 2],
                  z_channels=32)
    loaded, loaded_tok = load_official_aim(release, vq_config=vq_cfg,
                                           vq_arch_overrides={"ch": 32, "num_res_blocks": tok.config.num_res_blocks})
    assert loaded.config.sample_position_shift == 1 and loaded_tok is not None
    labels = torch.tensor([3])
    b = generate_raster(loaded, labels, SamplingConfig(cfg_scale=2.0, top_k=1)).tokens
    model.config.sample_position_shift = 1  # the converter turns the official sampling offset on
    assert torch.equal(generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=1)).tokens, b)
    mambagen.save_model(loaded, tmp_path / "ours", tokenizer=loaded_tok)
    assert main(["sample", "--model", str(tmp_path / "ours"), "--classes", "3", "--per-class", "1",
                 "--out", str(tmp_path / "g.png")]) == 0
