"""Generator training: resume equals uninterrupted training, NaN stops cleanly, overfitting works,
and the whole two-process path through torchrun (gloo) runs on CPU."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import mambagen
from mambagen.data.tokens import TokenDataset
from mambagen.io import load_safetensors
from mambagen.train.loop import TrainConfig, TrainingDiverged, _batch_indices, class_balance_weights, train

from helpers import tiny_token_data


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_data(tmp_path_factory.mktemp("tok"), train=24, val=6, flip=True)


def _cfg(tokens, out, **kw):
    base = dict(data=str(tokens / "train"), val_data=str(tokens / "val"), out=str(out), model="aim-tiny",
                steps=6, batch_size=4, lr=2e-3, warmup=2, ckpt_every=3, eval_every=3, log_every=1, ema=0.9,
                seed=1, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def test_token_shards_hold_both_flips(tokens):
    ds = TokenDataset(tokens / "train")
    assert len(ds) == 24 and ds.tokens.shape == (24, 2, 16) and ds.num_classes == 2 and ds.num_tokens == 16
    a, _ = ds.batch(torch.arange(24), epoch=0, seed=0)
    b, _ = ds.batch(torch.arange(24), epoch=1, seed=0)
    assert not torch.equal(a, b)  # the view (original / flipped) is redrawn each epoch


def test_batches_cover_an_epoch_without_repeats():
    seen = torch.cat([_batch_indices(s, 10, 3, seed=0)[1] for s in range(3)])
    assert len(set(seen.tolist())) == 9


def test_class_balance_evens_out_a_long_tail():
    labels = torch.tensor([0] * 90 + [1] * 10)             # 9:1
    assert class_balance_weights(labels, 0.0) is None
    drawn = torch.cat([_batch_indices(s, 100, 10, 0, class_balance_weights(labels, 1.0))[1] for s in range(400)])
    share = (labels[drawn] == 1).float().mean().item()     # every class alike: 1/2, not 1/10
    assert abs(share - 0.5) < 0.03, share
    drawn = torch.cat([_batch_indices(s, 100, 10, 0, class_balance_weights(labels, 0.5))[1] for s in range(400)])
    share = (labels[drawn] == 1).float().mean().item()     # sqrt: 10*10^-.5 / (10*10^-.5 + 90*90^-.5) = 0.25
    assert abs(share - 0.25) < 0.03, share
    again = _batch_indices(7, 100, 10, 0, class_balance_weights(labels, 1.0))[1]   # a pure function: resume
    assert torch.equal(again, _batch_indices(7, 100, 10, 0, class_balance_weights(labels, 1.0))[1])
    with pytest.raises(ValueError, match="class_balance"):
        TrainConfig(data="d", out="o", class_balance=1.5)


def test_resume_gives_identical_weights(tokens, tmp_path):
    straight = train(_cfg(tokens, tmp_path / "a", grad_accum=2, keep_best=True, eval_every=1))
    first = _cfg(tokens, tmp_path / "b", grad_accum=2, steps=6, keep_best=True, eval_every=1)
    first.steps = 3   # "killed" after the checkpoint at step 3 ...
    train(first)
    shutil.rmtree(tmp_path / "b" / "final")
    resumed = train(_cfg(tokens, tmp_path / "b", grad_accum=2, resume=True, keep_best=True, eval_every=1))
    for d_a, d_b in ((straight, resumed), (tmp_path / "a" / "best", tmp_path / "b" / "best")):
        for name in ("model.safetensors", "ema.safetensors"):
            a, b = load_safetensors(d_a / name), load_safetensors(d_b / name)
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (d_a, name, k)
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(rows) == len((tmp_path / "a" / "log.csv").read_text().splitlines())  # no duplicated steps


def test_resumed_ema_lands_on_the_training_device_with_its_ties(tmp_path):
    """A resumed run's EMA goes where the model trains (it was left on the CPU once, and the first EMA
    update after a GPU resume failed), and a tied weight stays one tensor."""
    from mambagen.io import save_safetensors
    from mambagen.train.plumbing import load_ema
    shared = torch.randn(4, 3)
    save_safetensors(tmp_path / "ema.safetensors", {"tok_emb.weight": shared, "head.weight": shared,
                                                    "norm.weight": torch.ones(3)})
    ema = load_ema(tmp_path / "ema.safetensors", torch.device("meta"))
    assert all(v.device.type == "meta" for v in ema.values())
    assert ema["tok_emb.weight"] is ema["head.weight"] and ema["norm.weight"] is not ema["head.weight"]


def test_keep_best_holds_the_model_at_the_lowest_held_out_bits(tokens, tmp_path):
    train(_cfg(tokens, tmp_path / "k", steps=8, eval_every=1, keep_best=True, lr=0.05, warmup=1))
    lines = (tmp_path / "k" / "log.csv").read_text().splitlines()
    col = {n: i for i, n in enumerate(lines[0].split(","))}
    val = {int(r[col["step"]]): float(r[col["value"]]) for r in (ln.split(",") for ln in lines[1:])
           if r[col["split"]] == "val"}
    best_step = min(val, key=val.get)
    meta = json.loads((tmp_path / "k" / "best" / "config.json").read_text())
    assert meta["step"] == best_step and meta["val_bits_per_token"] == pytest.approx(val[best_step])
    assert not (tmp_path / "k" / "best.new").exists()
    mambagen.load(tmp_path / "k" / "best")
    with pytest.raises(ValueError, match="keep_best needs val_data"):
        _cfg(tokens, tmp_path / "x", keep_best=True, val_data=None)


def test_nan_loss_stops_with_last_checkpoint_intact(tokens, tmp_path, monkeypatch):
    from mambagen.models.aim import AiM
    real_forward = AiM.forward
    calls = {"n": 0}

    def forward(self, codes, labels):
        logits, loss = real_forward(self, codes, labels)
        calls["n"] += 1
        return logits, loss * float("nan") if calls["n"] > 4 else loss  # steps 1-4 fine, step 5 NaN

    monkeypatch.setattr(AiM, "forward", forward)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5.*step_00000003"):
        train(_cfg(tokens, tmp_path / "r", val_data=None))
    ckpts = sorted((tmp_path / "r" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_00000003"]
    mambagen.load(ckpts[0])  # loadable


def test_overfit_single_batch_loss_falls(tokens, tmp_path):
    final = train(_cfg(tokens, tmp_path / "o", steps=40, batch_size=6, lr=0.3, warmup=1, val_data=None, class_dropout=0.0,
                       ckpt_every=40, eval_every=40, ema=0.0,
                       data=str(tokens / "val")))  # 6 samples, batch 6: the same batch every step
    rows = [r.split(",") for r in (tmp_path / "o" / "log.csv").read_text().splitlines()[1:]]
    header = (tmp_path / "o" / "log.csv").read_text().splitlines()[0].split(",")
    col = {n: i for i, n in enumerate(header)}
    losses = [float(r[col["value"]]) for r in rows if r[col["name"]] == "loss" and r[col["split"]] == "train"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert (final / "config.json").exists() and (tmp_path / "o" / "curves.png").exists()


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_two_processes_gloo_then_resume_and_sample(tokens, tmp_path):
    out = tmp_path / "ddp"
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")

    def run(steps, *extra):
        cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "mambagen", "train",
               "--data", str(tokens / "train"), "--val-data", str(tokens / "val"),
               "--tokenizer", str(tokens / "tokenizer"), "--out", str(out), "--model", "aim-tiny",
               "--steps", str(steps), "--batch-size", "4", "--ckpt-every", "2", "--eval-every", "2",
               "--log-every", "1", "--device", "cpu", "--no-progress", *extra]
        r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]

    run(4, "--strategy", "fsdp")   # FSDP (gloo, CPU) writes full, name-keyed checkpoints ...
    run(6, "--resume")             # ... that DDP resumes
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 6
    pipe = mambagen.load(out / "final")
    assert isinstance(pipe, mambagen.Pipeline)
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_00000006"
    assert (out / "samples_00000006.png").exists()
    from mambagen.cli import main
    assert main(["sample", "--model", str(out / "final"), "--classes", "0,1", "--per-class", "1",
                              "--out", str(tmp_path / "g.png")]) == 0


def test_activation_checkpointing_gives_the_same_gradients():
    from mambagen.train.memory import checkpoint_blocks
    torch.manual_seed(0)
    a = mambagen.create_model("aim-tiny").train()
    b = mambagen.create_model("aim-tiny").train()
    b.load_state_dict(a.state_dict())
    checkpoint_blocks(b)
    codes, labels = torch.randint(0, 256, (2, 16)), torch.tensor([1, 2])
    for m in (a, b):
        m(codes, labels)[1].backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
    assert a.state_dict().keys() == b.state_dict().keys()


def test_compile_option_compiles_the_model_in_place(tokens, tmp_path, monkeypatch):
    """--compile uses nn.Module.compile (in place), so checkpoints keep the plain parameter names."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    final = train(_cfg(tokens, tmp_path / "c", steps=2, compile=True, val_data=None))
    assert compiled == ["AiM"]
    keys = set(load_safetensors(final / "model.safetensors"))
    assert keys == set(mambagen.create_model("aim-tiny").state_dict())
