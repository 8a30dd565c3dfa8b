"""Time to 50,000 images with `mambagen sample-many` (the command users run, decoding and shards included),
measured on a few thousand per model and stated as such; then `mambagen reproduce` end to end for one
registered size (random weights) against a synthetic ADM-style reference. Writes argv[1] (JSON).

    PYTHONPATH=$PWD python bench/time_to_50k.py $OUT/h200_run18_time_to_50k.json [MODEL ...]

The steady rate comes from the shards' write times (one atomic shard per batch), leaving out the first
batch (graph capture and compiling); time to 50k = that setup + 50,000 / the steady rate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = ["aim-l", "gpt-l", "arpg-l", "mvar-d16"]
# the 256 px tokenizers (random weights): a registered size is otherwise shaped to its family's tiny one
TOKENIZER = {"aim": "vq-f16", "gpt": "vq-f16", "arpg": "vq-f16", "var": "msvq-f16", "mvar": "msvq-f16"}
PER_CLASS, BATCH = 2, 64        # 2,000 images of 1,000 classes


def sample_many(model: str, out: Path) -> dict:
    from mambagen.models.registry import family_of_size
    cmd = [sys.executable, "-m", "mambagen", "sample-many", "--model", model, "--out", str(out), "--per-class",
           str(PER_CLASS), "--batch-size", str(BATCH), "--no-progress",
           "--tokenizer", TOKENIZER[family_of_size(model).name]]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wall = time.time() - t0
    shards = sorted((out / "shards").glob("shard_*.npz"), key=lambda f: f.stat().st_mtime)
    times = [f.stat().st_mtime for f in shards]
    steady = (len(shards) - 1) * BATCH / (times[-1] - times[0]) if len(shards) > 2 else None
    setup = times[0] - t0 if times else None
    return {"model": model, "rc": p.returncode, "images": PER_CLASS * 1000, "batch": BATCH, "wall_s": round(wall, 1),
            "first_shard_s": round(setup, 1) if setup else None, "steady_images_per_s": steady,
            "time_to_50k_min": round((setup + 50_000 / steady) / 60, 1) if steady else None,
            "precision": json.loads((out / "meta.json").read_text())["spec"]["precision"] if (out / "meta.json").exists() else None,
            "stdout_tail": p.stdout[-300:], "stderr_tail": p.stderr[-600:]}


def tiny_reference(root: Path) -> tuple[Path, Path]:
    """A TorchScript stand-in feature network and an ADM-style batch (arr_0, mu, sigma) it measured."""
    import torch.nn.functional as F

    class Pool(torch.nn.Module):
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, 4).flatten(1)

    net = root / "pool.pt"
    torch.jit.script(Pool()).save(str(net))
    images = np.random.default_rng(0).integers(0, 256, (500, 256, 256, 3), dtype=np.uint8)
    from mambagen.eval.inception import load_network, run_network
    from mambagen.eval.metrics import feature_stats
    mu, sigma = feature_stats(run_network(load_network(str(net)), images, 100, "cpu", False))
    ref = root / "VIRTUAL_synthetic.npz"
    np.savez(ref, arr_0=images, mu=mu, sigma=sigma)
    return net, ref


def main(path: str, models: list[str]) -> None:
    root = Path(tempfile.mkdtemp())
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "note": f"{PER_CLASS * 1000} images per model, batch {BATCH}, random "
              "weights, each model's default sampling setting; decode and shard writes included", "runs": []}
    for m in models:
        report["runs"].append(sample_many(m, root / m))
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report["runs"][-1].items() if "tail" not in k}))
    if os.environ.get("SKIP_REPRODUCE"):
        return
    net, ref = tiny_reference(root)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "mambagen", "reproduce", "arpg-l", "--reference", str(ref), "--num", "1000",
                        "--out", str(root / "repro"), "--inception", str(net), "--no-progress"],
                       capture_output=True, text=True, timeout=900)
    report["reproduce"] = {"model": "arpg-l (random weights)", "rc": p.returncode, "wall_s": round(time.time() - t0, 1),
                           "report": json.loads((root / "repro" / "report.json").read_text()) if p.returncode == 0
                           else None, "stderr_tail": p.stderr[-800:]}
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report["reproduce"].items() if k != "report"}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or MODELS)
