"""The whole two-stage path on CPU, through the command line, as a user runs it:
image folder -> train-tokenizer -> tokenize -> train (torchrun, 2 processes, gloo) -> resume -> sample."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import mambagen
import mambagen.data.tokens
from mambagen.cli import main

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


def _image_folder(root, n_per_class=8, size=20):
    """Two classes: red discs and blue squares on white, at random positions."""
    rng = np.random.default_rng(0)
    for label in ("discs", "squares"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            img = np.full((size, size, 3), 255, np.uint8)
            cy, cx = rng.integers(5, size - 5, 2)
            yy, xx = np.mgrid[:size, :size]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 16 if label == "discs" else (abs(yy - cy) < 4) & (abs(xx - cx) < 4)
            img[mask] = (220, 30, 30) if label == "discs" else (30, 30, 220)
            Image.fromarray(img).save(root / label / f"{i}.png")
    (root / "discs" / "broken.png").write_bytes(b"not a png")   # skipped and reported, never a crash


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed")
def test_two_stage_pipeline_through_the_cli(tmp_path, capsys):
    images = tmp_path / "images"
    _image_folder(images)
    run = tmp_path / "run"
    torch.set_num_threads(1)
    assert main(["train-tokenizer", "--data", str(images), "--out", str(run / "vq"), "--tokenizer", "vq-tiny",
                 "--image-size", "16", "--batch-size", "4", "--steps", "4", "--eval-every", "4", "--ckpt-every", "4",
                 "--num-workers", "0", "--device", "cpu", "--no-progress"]) == 0
    assert (run / "vq" / "tokenizer" / "config.json").exists() and (run / "vq" / "curves.png").exists()

    assert main(["tokenize", "--data", str(images), "--tokenizer", str(run / "vq" / "tokenizer"),
                 "--out", str(run / "tokens"), "--image-size", "16", "--flip", "--device", "cpu", "--no-progress"]) == 0
    assert "tokenizing" not in capsys.readouterr().err                 # --no-progress: no bars in a log
    meta = mambagen.data.tokens.TokenDataset(run / "tokens").meta
    assert meta["num_samples"] == 16 and meta["num_tokens"] == 16 and meta["classes"] == ["discs", "squares"]

    def train(steps, *extra):
        cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "mambagen", "train",
               "--data", str(run / "tokens"), "--val-data", str(run / "tokens"), "--out", str(run / "aim"),
               "--tokenizer", str(run / "vq" / "tokenizer"), "--model", "aim-tiny", "--steps", str(steps),
               "--batch-size", "4", "--ckpt-every", "2", "--eval-every", "2", "--log-every", "1",
               "--ema", "0.99", "--device", "cpu", "--no-progress", *extra]
        r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-4000:]

    train(2)
    train(4, "--resume")
    assert sorted(p.name for p in (run / "aim" / "checkpoints").iterdir())[-1] == "step_00000004"
    for f in ("log.csv", "curves.png", "samples_00000004.png", "final/config.json", "final/ema.safetensors",
              "final/tokenizer/config.json"):
        assert (run / "aim" / f).exists(), f
    assert list((run / "aim" / "tb").iterdir())

    assert main(["sample", "--model", str(run / "aim" / "final"), "--classes", "0,1", "--per-class", "2",
                 "--out", str(tmp_path / "grid.png"), "--npz", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (4, 16, 16, 3)
