"""Issue 16's faults on CUDA: SIGTERM during `train --device cuda` (one process, and torchrun with NCCL)
writes a checkpoint and resumes; the resumed run's final model samples, sample-many runs, a flipped bit
is caught; `info` names the kernels that run. Writes one JSON (path = argv[1]).

    PYTHONPATH=$PWD python bench/check_faults_gpu.py $OUT/h200_run17_faults.json
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mambagen
from mambagen.data.tokens import tokenize_dataset

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "NCCL_NVLS_ENABLE": "0"}
DEVICE = os.environ.get("DEVICE", "cuda")   # DEVICE=cpu tries the script here
MG = [sys.executable, "-m", "mambagen"]


class Squares(torch.utils.data.Dataset):
    classes = ["a", "b"]

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.full((3, 32, 32), -1.0 + (i % 2)) + 0.1 * torch.randn(3, 32, 32), i % 2


def interrupted_run(cmd, out: Path, rows: int = 5) -> dict:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 300:
        log = out / "log.csv"
        if proc.poll() is not None:
            break
        if log.exists() and sum(",train,loss," in ln for ln in log.read_text().splitlines()) >= rows:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    return {"rc": proc.returncode, "traceback": "Traceback" in stderr, "resume_line": "continue with:" in stderr,
            "checkpoints": [c.name for c in ckpts], "stderr_tail": stderr[-600:]}


def run(cmd) -> dict:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    return {"rc": p.returncode, "stdout_tail": p.stdout[-400:], "stderr_tail": p.stderr[-600:]}


def main(path: str) -> None:
    root = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    mambagen.save_tokenizer(tok, root / "tok")
    tokenize_dataset(tok, Squares(), root / "tokens", batch_size=16, progress=False)
    train = MG + ["train", "--data", str(root / "tokens"), "--tokenizer", str(root / "tok"), "--model", "aim-tiny",
                  "--batch-size", "8", "--ckpt-every", "100000", "--eval-every", "100000", "--log-every", "1",
                  "--device", DEVICE, "--no-progress"]
    report = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__}

    out = root / "run"
    report["train_sigterm"] = interrupted_run(train + ["--out", str(out), "--steps", "100000"], out)
    step = int(report["train_sigterm"]["checkpoints"][-1].split("_")[1]) if report["train_sigterm"]["checkpoints"] else 0
    report["train_resume"] = run(train + ["--out", str(out), "--steps", str(step + 3), "--resume"])
    report["sample_final"] = run(MG + ["sample", "--model", str(out / "final"), "--out", str(root / "s.png"),
                                       "--per-class", "2"])
    report["sample_many"] = run(MG + ["sample-many", "--model", str(out / "final"), "--out", str(root / "sm"),
                                      "--per-class", "4"])
    flipped = root / "flipped"
    shutil.copytree(out / "final", flipped)
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x10
    (flipped / "model.safetensors").write_bytes(bytes(data))
    report["flipped_bit"] = run(MG + ["sample", "--model", str(flipped), "--out", str(root / "f.png")])
    report["info"] = run(MG + ["info"])

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out2 = root / "ddp"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "1", "-m", "mambagen"] + train[3:] + \
        ["--out", str(out2), "--steps", "100000"]
    report["torchrun_nccl_sigterm"] = interrupted_run(cmd, out2)
    report["ok"] = (report["train_sigterm"]["rc"] == 143 and not report["train_sigterm"]["traceback"]
                    and report["train_sigterm"]["resume_line"] and report["train_resume"]["rc"] == 0
                    and report["sample_final"]["rc"] == 0 and report["sample_many"]["rc"] == 0
                    and report["flipped_bit"]["rc"] == 2 and "corrupt" in report["flipped_bit"]["stderr_tail"]
                    and len(report["torchrun_nccl_sigterm"]["checkpoints"]) == 1)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk == "rc"}
                      for k, v in report.items()}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
