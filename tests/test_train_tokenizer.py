"""Stage-1 training on CPU with vq-tiny: outputs, exact resume, overfitting, NaN handling; metrics; GAN/LPIPS."""
import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image

import mambagen.train.tokenizer as tt
from mambagen.cli.train import add_train_tokenizer
from mambagen.checkpoint import load_tokenizer
from mambagen.io import CheckpointError, load_safetensors, save_safetensors
from mambagen.metrics import codebook_usage, psnr, ssim
from mambagen.train.gan import (LPIPS, NLayerDiscriminator, adaptive_weight, gan_active, hinge_d_loss,
                                hinge_g_loss, load_lpips)
from mambagen.train.logging import read_log

SIZE = 16
COLOURS = [(220, 40, 40), (40, 60, 220)]

try:  # the real dataset; a stand-in with the same interface if it is not importable
    from mambagen.data.folder import ImageFolder
except ImportError:  # pragma: no cover
    ImageFolder = None


class StandInFolder(torch.utils.data.Dataset):
    """root/<class>/<png> -> ((3, S, S) in [-1, 1], label); flips are a function of (seed, epoch, index)."""

    def __init__(self, root, image_size, random_flip=False):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(str(f), c) for c, name in enumerate(self.classes) for f in sorted((root / name).glob("*.png"))]
        self.image_size, self.random_flip, self.seed, self.epoch = image_size, random_flip, 0, 0

    def __len__(self):
        return len(self.samples)

    def set_epoch(self, epoch, seed):
        self.epoch, self.seed = epoch, seed

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = Image.open(path).convert("RGB").resize((self.image_size, self.image_size))
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
        if self.random_flip and hash((self.seed, self.epoch, i)) % 2:
            x = x.flip(-1)
        return x, label


def write_squares(root, per_class, seed):
    """Coloured squares at random places on a dark background, one folder per colour."""
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            a = np.full((SIZE, SIZE, 3), 30, np.uint8)
            x, y = rng.integers(0, SIZE // 2, 2)
            a[y:y + SIZE // 2, x:x + SIZE // 2] = colour
            Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these convolutions are tiny: a second OpenMP thread gains nothing, and on a busy machine its
    # barriers make each step ~10x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("squares")
    return write_squares(base / "train", 8, 0), write_squares(base / "val", 3, 1)


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    torch.manual_seed(0)
    model = LPIPS()
    for i in range(5):  # the released heads are non-negative; random ones should be too
        getattr(model, f"lin{i}").model[1].weight.data.abs_()
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg_random.safetensors"
    save_safetensors(path, model.state_dict())
    return path


def config(data, out, **overrides):
    train, val = data
    kw = dict(data=str(train), val_data=str(val), out=str(out), tokenizer="vq-tiny", image_size=SIZE,
              batch_size=4, steps=6, lr=1e-3, log_every=1, eval_every=3, ckpt_every=3, keep_last=2,
              num_workers=0, progress=False, disc_layers=2, disc_channels=16, grid_images=4, device="cpu")
    kw.update(overrides)
    return tt.TokenizerTrainConfig(**kw)


def run(cfg, data):
    if ImageFolder is not None:
        return tt.train_tokenizer(cfg)
    train, val = data  # pragma: no cover
    return tt.train_tokenizer(cfg, StandInFolder(train, SIZE, cfg.random_flip), StandInFolder(val, SIZE))


def state(path):
    return load_safetensors(path)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def nan_at(monkeypatch, bad_call):
    """Make the reconstruction loss NaN on its `bad_call`-th training call (1-based)."""
    real, calls = tt.reconstruction_loss, {"n": 0}

    def patched(recon, target, l1, l2):
        loss = real(recon, target, l1, l2)
        if recon.requires_grad:  # training calls only, not evaluation
            calls["n"] += 1
            if calls["n"] == bad_call:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(tt, "reconstruction_loss", patched)


# ---- training runs --------------------------------------------------------------------------------

def test_tiny_run_writes_every_output(data, tmp_path, lpips_file):
    out = tmp_path / "run"
    cfg = config(data, out, gan_weight=0.5, disc_start=2, perceptual_weights=str(lpips_file), ema=0.9,
                 lr_schedule="cosine", warmup=2)
    final = run(cfg, data)
    assert final == out / "tokenizer"
    tok = load_tokenizer(final)
    ids = tok.encode(torch.rand(1, 3, SIZE, SIZE) * 2 - 1)
    assert ids.shape == (1, (SIZE // tok.downsample) ** 2)
    assert load_tokenizer(out / "tokenizer_ema") is not None
    for name in ("curves.png", "recon_3.png", "recon_6.png", "log.csv", "train.log"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_3", "step_6"]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # recon grid: 4 originals above 4 reconstructions, 2x upscaled
    grid = Image.open(out / "recon_6.png")
    assert grid.size == (2 * (4 * (SIZE + 2) + 2), 2 * (2 * (SIZE + 2) + 2))
    rows = read_log(out / "log.csv")
    names = {(r["split"], r["name"]) for r in rows}
    for name in ("loss", "recon", "codebook", "commit", "perceptual", "g_loss", "d_loss", "lr", "grad_norm", "usage"):
        assert ("train", name) in names, name
    for name in ("psnr", "ssim", "usage", "recon", "lpips"):
        assert ("val", name) in names, name
    assert not any(r["split"] == "train" and r["name"] == "g_loss" and r["step"] <= 2 for r in rows)  # disc_start
    lrs = [r["value"] for r in rows if r["name"] == "lr"]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3) and lrs[-1] < 2e-4  # warm-up, cosine
    log_text = (out / "train.log").read_text()
    assert "perceptual loss on" in log_text and "GAN loss on from step 2" in log_text
    # an existing run is not overwritten by accident
    with pytest.raises(ValueError, match="--resume"):
        run(cfg, data)


def test_a_judge_directory_is_a_perceptual_loss(data, tmp_path):
    """--perceptual-weights DIR of a judge: an LPIPS-like distance over its stages, zero for identical images,
    differentiable, resized to the judge's size; a tokenizer trains with it and logs it under its own name."""
    from mambagen.eval.judge import Judge, JudgeConfig, save_judge
    from mambagen.train.gan import FeatureDistance, load_perceptual
    torch.manual_seed(0)
    judge_dir = save_judge(Judge(JudgeConfig(num_classes=2, image_size=SIZE, widths=(8, 8, 16, 16))), tmp_path / "judge")
    dist = load_perceptual(judge_dir)
    assert isinstance(dist, FeatureDistance) and not any(p.requires_grad for p in dist.parameters())
    x = (torch.rand(2, 3, 2 * SIZE, 2 * SIZE) * 2 - 1).requires_grad_()
    y = (x.detach() + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert dist(x, x).tolist() == [0.0, 0.0] and (dist(x, y) > 0).all()
    dist(x, y).sum().backward()
    assert x.grad.abs().sum() > 0
    out = tmp_path / "run"
    run(config(data, out, steps=2, perceptual_weights=str(judge_dir)), data)
    assert "perceptual loss on: the judge's features" in (out / "train.log").read_text()
    names = {(r["split"], r["name"]) for r in read_log(out / "log.csv")}
    assert ("train", "perceptual") in names and ("val", "judge_perceptual") in names


def test_perceptual_loss_off_without_weights_is_logged(data, tmp_path):
    out = tmp_path / "run"
    run(config(data, out, steps=1, val_data=None), data)
    assert "perceptual (LPIPS) loss off: no --perceptual-weights file given" in (out / "train.log").read_text()
    assert {r["split"] for r in read_log(out / "log.csv")} == {"train", "train_eval"}


def test_resume_reproduces_the_uninterrupted_run(data, tmp_path, monkeypatch):
    # 4 batches per epoch: the checkpoint at step 3 is mid-epoch
    kw = dict(steps=8, ckpt_every=3, eval_every=3, gan_weight=0.5, disc_start=1, ema=0.9, random_flip=True)
    straight = run(config(data, tmp_path / "a", **kw), data)

    # the second run dies at step 5 (NaN) after its checkpoint at step 3, then resumes
    with monkeypatch.context() as m:
        nan_at(m, 5)
        with pytest.raises(tt.TrainingDivergedError):
            run(config(data, tmp_path / "b", **kw), data)
    assert [p.name for p in sorted((tmp_path / "b" / "checkpoints").iterdir())] == ["step_3"]
    resumed = run(config(data, tmp_path / "b", resume=True, **kw), data)

    assert_same(state(straight / "model.safetensors"), state(resumed / "model.safetensors"))
    for f in ("discriminator.safetensors", "ema.safetensors"):
        assert_same(state(tmp_path / "a" / "checkpoints" / "step_8" / f),
                    state(tmp_path / "b" / "checkpoints" / "step_8" / f))
    # the crashed tail (step 4) was dropped: one row per (step, split, name), same values as the straight run
    rows_a, rows_b = read_log(tmp_path / "a" / "log.csv"), read_log(tmp_path / "b" / "log.csv")
    keys_b = [(r["step"], r["split"], r["name"]) for r in rows_b]
    assert len(keys_b) == len(set(keys_b))
    loss = {(r["step"], r["split"]): r["value"] for r in rows_a if r["name"] == "recon"}
    assert loss == {(r["step"], r["split"]): r["value"] for r in rows_b if r["name"] == "recon"}


def test_resume_refuses_a_different_model(data, tmp_path):
    run(config(data, tmp_path / "r", steps=3), data)
    with pytest.raises(ValueError, match=r"cannot resume: .*image_size \(checkpoint 16, now 32\)"):
        run(config(data, tmp_path / "r", steps=6, resume=True, image_size=32), data)
    with pytest.raises(ValueError, match="no checkpoint found"):
        run(config(data, tmp_path / "empty", resume=True), data)


def test_overfits_a_single_batch(tmp_path):
    class FixedBatch(torch.utils.data.Dataset):  # exactly one batch: every step sees the same images
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = (torch.rand(4, 3, 4, 4, generator=g) * 2 - 1).repeat_interleave(4, -1).repeat_interleave(4, -2)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.x[i], 0

    cfg = tt.TokenizerTrainConfig(data="-", out=str(tmp_path / "o"), tokenizer="vq-tiny", image_size=SIZE,
                                  batch_size=4, steps=30, lr=2e-3, log_every=1, eval_every=30, ckpt_every=30,
                                  num_workers=0, progress=False, random_flip=False, device="cpu")
    tt.train_tokenizer(cfg, FixedBatch())
    recon = [r["value"] for r in read_log(tmp_path / "o" / "log.csv") if r["split"] == "train" and r["name"] == "recon"]
    assert len(recon) == 30
    assert np.mean(recon[-3:]) < 0.5 * recon[0], recon


def test_nan_stops_with_a_clear_error_and_keeps_the_checkpoint(data, tmp_path, monkeypatch):
    nan_at(monkeypatch, 5)
    out = tmp_path / "run"
    with pytest.raises(tt.TrainingDivergedError, match=r"loss became nan at step 5 .*last good checkpoint is .*step_3"):
        run(config(data, out, steps=10), data)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_3"]  # nothing written after the NaN
    assert load_tokenizer(out / "checkpoints" / "step_3" / "tokenizer") is not None
    assert not (out / "tokenizer").exists()
    assert all(r["step"] <= 4 for r in read_log(out / "log.csv"))
    assert (out / "curves.png").is_file()


def test_cli_options_and_help(capsys):
    parser = argparse.ArgumentParser(prog="mambagen")
    add_train_tokenizer(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-tokenizer", "--data", "d", "--out", "o", "--steps", "7", "--betas", "0.4", "0.8",
                              "--no-random-flip", "--perceptual-weights", "w.pt", "--gan-weight", "0.5"])
    fields = {f for f in tt.TokenizerTrainConfig.__dataclass_fields__}
    cfg = tt.TokenizerTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    assert (cfg.steps, cfg.betas, cfg.random_flip, cfg.perceptual_weights, cfg.gan_weight, cfg.tokenizer) == \
        (7, (0.4, 0.8), False, "w.pt", 0.5, "vq-f8-small")
    assert fields - set(vars(args)) == set()  # every config field is an option
    with pytest.raises(SystemExit):
        parser.parse_args(["train-tokenizer", "--help"])
    text = capsys.readouterr().out
    assert "--perceptual-weights FILE" in text and "(default: 0.0001)" in text


def test_config_errors():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tt.TokenizerTrainConfig(data="d", out="o", tokenizer="nope")
    with pytest.raises(ValueError, match="no reconstruction loss"):
        tt.TokenizerTrainConfig(data="d", out="o", l2_weight=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        tt.TokenizerTrainConfig(data="d", out="o", lr_schedule="linear")


# ---- metrics --------------------------------------------------------------------------------------

def test_psnr_of_known_mse():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 10 log10(4 / 0.01)
    y[1] += 0.2
    assert psnr(x, y).tolist() == pytest.approx([10 * math.log10(400), 10 * math.log10(100)], rel=1e-5)
    assert psnr(x, x).isinf().all()


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    small = ssim(x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    large = ssim(x, (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    assert (large < small).all() and (small < 1).all()
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:1])


def test_ssim_matches_the_closed_form_for_constant_images():
    # constant images: variances 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    x, y = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), -0.3)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.2 * -0.3 + c1) / (0.2 ** 2 + 0.3 ** 2 + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-4)


def test_codebook_usage():
    assert codebook_usage(torch.tensor([[0, 1, 1], [3, 3, 3]]), 8) == 3 / 8
    assert codebook_usage(torch.arange(8), 8) == 1.0
    with pytest.raises(ValueError, match="out of range"):
        codebook_usage(torch.tensor([8]), 8)


# ---- GAN and perceptual losses -------------------------------------------------------------------

def test_discriminator_and_hinge_losses():
    disc = NLayerDiscriminator(3, 16, n_layers=2)
    assert disc(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 2, 2)  # 16 / 2**2 - 2
    assert NLayerDiscriminator(3, 8, 3)(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 2, 2)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in disc.modules())
    with pytest.raises(ValueError, match="at least 24x24"):
        NLayerDiscriminator(3, 8, 3)(torch.zeros(1, 3, 16, 16))
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.25 + 0.75)
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)
    assert not gan_active(9, 10) and gan_active(10, 10)
    w = torch.nn.Parameter(torch.ones(3))
    assert adaptive_weight((2 * w).sum(), (w * 4).sum(), w).item() == pytest.approx(0.5, rel=1e-3)


def test_lpips_loads_from_a_file_and_is_zero_for_identical_images(lpips_file, tmp_path):
    lpips = load_lpips(lpips_file)
    assert not lpips.training and not any(p.requires_grad for p in lpips.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert lpips(x, x).tolist() == [0.0, 0.0]
    assert (lpips(x, y) > 0).all()
    # the lpips/taming layout (net.slice<k>.<index>.*, scaling_layer.*) loads too
    sd = load_safetensors(lpips_file)
    slice_of = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4, 24: 5, 26: 5, 28: 5}
    taming = {(f"net.slice{slice_of[int(k.split('.')[1])]}.{k.split('.', 1)[1]}" if k.startswith("features.") else k): v
              for k, v in sd.items()}
    taming["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    torch.save(taming, tmp_path / "taming.pt")
    assert torch.allclose(load_lpips(tmp_path / "taming.pt")(x, y), lpips(x, y))
    # wrong files are clear errors
    save_safetensors(tmp_path / "bad.safetensors", {k: v for k, v in sd.items() if not k.startswith("lin3")})
    with pytest.raises(CheckpointError, match=r"missing keys .*lin3.model.1.weight"):
        load_lpips(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="file not found"):
        load_lpips(tmp_path / "nope.safetensors")
