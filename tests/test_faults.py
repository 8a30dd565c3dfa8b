"""Faults a cluster, a disk or a user brings: two runs in one folder, SIGINT/SIGTERM, divergence, torn
logs, full disks, bad token shards and image folders, bad config files and flags. Each must end in one
line and a non-zero exit (or be survived), and lose nothing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mambagen
from mambagen.cli import main
from mambagen.data.tokens import TokenDataset
from mambagen.io import CheckpointError, load_safetensors, save_safetensors
from mambagen.train.guard import RunLock
from mambagen.train.loop import TrainConfig, train

from helpers import tiny_token_data

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return tiny_token_data(tmp_path_factory.mktemp("faults"), train=16)


def _cfg(tokens, out, **kw):
    base = dict(data=str(tokens / "train"), out=str(out), model="aim-tiny", steps=4, batch_size=4, lr=2e-3,
                warmup=1, ckpt_every=2, eval_every=100, log_every=1, seed=1, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def _train_args(tokens, out, *extra):
    return ["train", "--data", str(tokens / "train"), "--out", str(out), "--model", "aim-tiny", "--steps", "4",
            "--batch-size", "4", "--ckpt-every", "2", "--eval-every", "100", "--device", "cpu", "--no-progress",
            *extra]


def _one_line(capsys, rc_expected, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == rc_expected, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _write_images(root: Path, per_class=8, size=16):
    for c, colour in enumerate([(220, 40, 40), (40, 60, 220)]):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.full((size, size, 3), 30, np.uint8)
            a[i % 8: i % 8 + 8, 2:10] = colour
            Image.fromarray(a).save(d / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------ one run per folder
def test_a_second_run_into_a_used_folder_is_refused_and_overwrite_replaces_it(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(tokens, out, "--seed", "1")) == 0
    before = load_safetensors(out / "final" / "model.safetensors")
    _one_line(capsys, 2, main(_train_args(tokens, out, "--seed", "2")), "already holds a run", "--overwrite")
    assert torch.equal(load_safetensors(out / "final" / "model.safetensors")["tok_emb.weight"],
                       before["tok_emb.weight"])                         # the old run is untouched
    capsys.readouterr()
    assert main(_train_args(tokens, out, "--seed", "2", "--overwrite")) == 0
    after = load_safetensors(out / "final" / "model.safetensors")
    assert not torch.equal(after["tok_emb.weight"], before["tok_emb.weight"])
    assert json.loads((out / "train_config.json").read_text())["seed"] == 2
    assert not (out / ".lock").exists()
    card = (out / "final" / "README.md").read_text()                  # a model card, as a hub user expects
    assert "library_name: mambagen" in card and "## Training" in card and "sha256:" in card


def test_a_live_lock_is_respected_and_a_stale_one_taken_over(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                               "started": "now"}))
        _one_line(capsys, 2, main(_train_args(tokens, out)), "in use by another run", f"pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(_train_args(tokens, out)) == 0       # that process is gone: its lock is stale
    assert (out / "final" / "config.json").exists() and not (out / ".lock").exists()


def test_resume_refuses_changed_settings_unless_allowed_and_never_another_model(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(tokens, out)) == 0
    capsys.readouterr()
    _one_line(capsys, 2, main(_train_args(tokens, out, "--resume", "--steps", "6", "--batch-size", "2")),
              "batch_size (checkpoint 4, now 2)", "--allow-changes")
    _one_line(capsys, 2, main(_train_args(tokens, out, "--resume", "--model", "gpt-tiny")),
              "model (checkpoint 'aim-tiny', now 'gpt-tiny')")
    assert main(_train_args(tokens, out, "--resume", "--steps", "6", "--lr", "1e-3", "--allow-changes")) == 0
    assert "lr 0.0001 -> 0.001" in capsys.readouterr().out


def test_train_tokenizer_takes_the_lock_too(tmp_path, capsys):
    data = _write_images(tmp_path / "img")
    out = tmp_path / "vq"
    args = ["train-tokenizer", "--data", str(data), "--out", str(out), "--tokenizer", "vq-tiny", "--image-size",
            "16", "--batch-size", "4", "--steps", "2", "--eval-every", "2", "--ckpt-every", "2", "--num-workers",
            "0", "--no-progress", "--device", "cpu"]
    out.mkdir()
    RunLock(out).acquire()                                 # this process holds it
    _one_line(capsys, 2, main(args), "in use by another run")
    (out / ".lock").unlink()
    assert main(args) == 0
    capsys.readouterr()
    _one_line(capsys, 2, main(args), "already holds a run")
    assert main(args + ["--overwrite"]) == 0


def test_a_kill_mid_swap_is_recovered(tokens, tmp_path):
    """A kill between the two renames of a checkpoint replacement leaves `.step_N.old`: put back on start."""
    out = tmp_path / "run"
    train(_cfg(tokens, out, steps=2))
    ckpts = out / "checkpoints"
    step = next(ckpts.glob("step_*"))
    step.rename(ckpts / f".{step.name}.old")
    (ckpts / f".{step.name}.tmp").mkdir()                   # and a torn new one
    train(_cfg(tokens, out, steps=4, resume=True))
    assert (ckpts / step.name).is_dir() and not list(ckpts.glob(".*"))


# ------------------------------------------------------------------------------------ signals
def _wait_for_rows(log: Path, n: int, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        if log.exists() and sum(",train,loss," in ln for ln in log.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError("training did not start")


def _interrupt(cmd, out: Path, sig, log_rows=3, group=False):
    """group: signal the whole process group, as Ctrl-C, `timeout` and Slurm do (loader workers too)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    _wait_for_rows(out / "log.csv", log_rows, proc)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_on_a_signal_writes_a_checkpoint_and_says_how_to_resume(tokens, tmp_path, sig, code):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mambagen", *_train_args(tokens, out)]
    cmd[cmd.index("--steps") + 1] = "100000"
    cmd[cmd.index("--ckpt-every") + 1] = "100000"
    cmd += ["--log-every", "1"]
    rc, _, stderr = _interrupt(cmd, out, sig)
    assert rc == code and "Traceback" not in stderr, stderr
    assert f"interrupted by {signal.Signals(sig).name} at step" in stderr and "continue with: mambagen" in stderr
    assert "--resume" in stderr.splitlines()[-1]
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1 and (ckpts[0] / "train_state.pt").exists()
    step = int(ckpts[0].name.split("_")[1])
    assert step >= 3
    resumed = subprocess.run(cmd[:cmd.index("--steps") + 1] + [str(step + 1)] + cmd[cmd.index("--steps") + 2:]
                             + ["--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and f"at step {step}" in resumed.stdout, resumed.stderr


@pytest.mark.parametrize("sig,code,workers", [(signal.SIGINT, 130, 0), (signal.SIGTERM, 143, 0),
                                              (signal.SIGTERM, 143, 2), (signal.SIGINT, 130, 2)])
def test_train_tokenizer_on_a_signal_writes_a_checkpoint(tmp_path, sig, code, workers):
    """With loader workers the signal goes to the whole process group (Ctrl-C, `timeout`, Slurm): the
    workers ignore it and the trainer still finishes its step and writes the checkpoint."""
    data = _write_images(tmp_path / "img")
    out = tmp_path / "vq"
    cmd = [sys.executable, "-m", "mambagen", "train-tokenizer", "--data", str(data), "--out", str(out),
           "--tokenizer", "vq-tiny", "--image-size", "16", "--batch-size", "4", "--steps", "100000",
           "--log-every", "1", "--eval-every", "100000", "--ckpt-every", "100000", "--num-workers", str(workers),
           "--no-progress", "--device", "cpu"]
    rc, _, stderr = _interrupt(cmd, out, sig, group=workers > 0)
    assert rc == code and "Traceback" not in stderr, stderr
    assert "continue with: mambagen train-tokenizer" in stderr
    ckpt = sorted((out / "checkpoints").glob("step_*"))
    assert len(ckpt) == 1 and (ckpt[0] / "tokenizer" / "config.json").exists()


def test_torchrun_sigterm_checkpoints_every_rank_together(tokens, tmp_path):
    import shutil
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed")
    out = tmp_path / "ddp"
    args = _train_args(tokens, out)
    args[args.index("--steps") + 1] = "100000"
    args[args.index("--ckpt-every") + 1] = "100000"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "mambagen", *args, "--log-every", "1"]
    rc, _, stderr = _interrupt(cmd, out, signal.SIGTERM)
    assert rc != 0
    assert "continue with: mambagen train" in stderr, stderr[-3000:]
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1 and (ckpts[0] / "train_state.pt").exists(), stderr[-3000:]


# ------------------------------------------------------------------------------------ divergence
def test_divergence_is_one_line_and_names_a_checkpoint_with_finite_weights(tokens, tmp_path, monkeypatch, capsys):
    from mambagen.models.aim import AiM
    out = tmp_path / "run"
    train(_cfg(tokens, out, steps=4, ckpt_every=1))
    for n in (3, 4):         # exploded weights (what an update with a huge gradient leaves)
        f = out / "checkpoints" / f"step_{n:08d}" / "model.safetensors"
        state = load_safetensors(f)
        state["tok_emb.weight"] = torch.full_like(state["tok_emb.weight"], float("inf"))
        save_safetensors(f, state)
    real = AiM.forward
    calls = {"n": 0}

    def forward(self, codes, labels):     # the loss of the 5th step (the weights of step 4) is NaN
        logits, loss = real(self, codes, labels)
        calls["n"] += 1
        return logits, loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(AiM, "forward", forward)
    fresh = tmp_path / "fresh"
    line = _one_line(capsys, 1, main(_train_args(tokens, fresh, "--steps", "8", "--ckpt-every", "1")),
                     "the loss became nan at step 5", "step_00000004")
    assert "lower --lr" in line
    from mambagen.train.plumbing import CheckpointFolders
    assert CheckpointFolders(out / "checkpoints").last_good(5).name == "step_00000002"    # 3 and 4 are inf


def test_resume_refuses_non_finite_weights(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(tokens, out, "--steps", "2")) == 0
    capsys.readouterr()
    f = next((out / "checkpoints").glob("step_*")) / "model.safetensors"
    state = load_safetensors(f)
    state["tok_emb.weight"][0, 0] = float("nan")
    save_safetensors(f, state)
    (f.parent / "digests.json").unlink()        # the digest would catch the change first
    _one_line(capsys, 2, main(_train_args(tokens, out, "--resume")), "non-finite weights")


def test_sampling_a_nan_checkpoint_is_one_line(tmp_path, capsys):
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    with torch.no_grad():
        gen.head.weight[0, 0] = float("nan")
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    _one_line(capsys, 2, main(["sample", "--model", str(d), "--out", str(tmp_path / "s.png")]), "non-finite weights")


# ------------------------------------------------------------------------------------ torn logs, full disks
def test_a_torn_log_tail_does_not_block_resume(tokens, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tokens, out, steps=2))
    with open(out / "log.csv", "a") as f:
        f.write("3,train,loss,")                  # killed right after a comma
    train(_cfg(tokens, out, steps=4, resume=True))
    from mambagen.train.logging import read_log
    rows = read_log(out / "log.csv")
    assert [r["step"] for r in rows if r["name"] == "loss"] == [1, 2, 3, 4]


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tokens, tmp_path, monkeypatch, capsys):
    import mambagen.train.plumbing as plumbing

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0; "
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(plumbing.torch, "save", full)
    out = tmp_path / "run"
    _one_line(capsys, 1, main(_train_args(tokens, out)), "the disk is full", "free in")
    assert not list((out / "checkpoints").glob(".*")) and not list((out / "checkpoints").glob("step_*"))


def test_train_tokenizer_full_disk_removes_its_temporary_folder(tmp_path, monkeypatch, capsys):
    import errno

    import mambagen.io as io

    real = io.save_safetensors

    def full(path, *a, **k):
        if "checkpoints" in str(path):
            raise io.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, *a, **k)

    import mambagen.checkpoint as ck
    monkeypatch.setattr(ck, "save_safetensors", full)
    data = _write_images(tmp_path / "img")
    out = tmp_path / "vq"
    rc = main(["train-tokenizer", "--data", str(data), "--out", str(out), "--tokenizer", "vq-tiny", "--image-size",
               "16", "--batch-size", "4", "--steps", "2", "--eval-every", "2", "--ckpt-every", "2",
               "--num-workers", "0", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "the disk is full" in err and "Traceback" not in err
    assert not list((out / "checkpoints").glob(".*"))


# ------------------------------------------------------------------------------------ bad token shards
def _bad_copy(tokens, tmp_path, edit_meta=None, edit_shard=None):
    import shutil
    d = tmp_path / "bad"
    shutil.copytree(tokens / "train", d)
    meta = json.loads((d / "meta.json").read_text())
    if edit_meta:
        edit_meta(meta)
        (d / "meta.json").write_text(json.dumps(meta))
    if edit_shard:
        f = d / meta["shards"][0]["file"]
        part = load_safetensors(f)
        edit_shard(part)
        save_safetensors(f, part)
    return d


def _set(key, value):
    def edit(part):
        t = part[key].clone()
        t.view(-1)[0] = value
        part[key] = t
    return edit


@pytest.mark.parametrize("case,meta_edit,shard_edit,needle", [
    ("id >= vocab", None, _set("tokens", 5000), "tokens hold 5000, outside 0..255"),
    ("id < 0", None, _set("tokens", -1), "tokens hold -1"),
    ("label >= classes", None, _set("labels", 2), "labels hold 2, outside 0..1 (num_classes 2"),
    ("label < 0", None, _set("labels", -3), "labels hold -3"),
    ("float tokens", None, lambda p: p.update(tokens=p["tokens"].float()), "tokens are torch.float32"),
    ("num_tokens a string", lambda m: m.update(num_tokens="16"), None, "num_tokens must be a positive integer"),
    ("vocab smaller than ids", lambda m: m.update(vocab_size=4), None, "(vocab_size 4 in meta.json)"),
    ("shard outside", lambda m: m["shards"][0].update(file="../train/shard_00000.safetensors"), None,
     "must be a relative path inside"),
])
def test_bad_token_shards_are_named_before_training(tokens, tmp_path, capsys, case, meta_edit, shard_edit, needle):
    bad = _bad_copy(tokens, tmp_path, meta_edit, shard_edit)
    with pytest.raises(CheckpointError, match=".*") as e:
        TokenDataset(bad)
    assert needle in str(e.value), (case, str(e.value))
    out = tmp_path / "run"
    args = _train_args(tokens, out)
    args[args.index("--data") + 1] = str(bad)
    _one_line(capsys, 2, main(args), needle)
    assert not out.exists()                            # a failed start leaves no folder behind


# ------------------------------------------------------------------------------------ image folders
def test_a_symlink_loop_counts_each_image_once_and_is_reported(tmp_path):
    from mambagen.data.folder import ImageFolder, describe_skipped
    root = _write_images(tmp_path / "img", per_class=8)
    os.symlink("..", root / "class0" / "loop")          # class0/loop -> the dataset root
    os.symlink(root / "class1" / "0.png", root / "class0" / "borrowed.png")
    ds = ImageFolder(root, 16)
    assert len(ds) == 16 and sorted(c for _, c in ds.samples).count(0) == 8
    report = ds.skipped_report()
    assert report["links_skipped"] == 2 and "not followed" in describe_skipped(report)


def test_train_tokenizer_leaves_out_unreadable_images_and_says_so(tmp_path, caplog):
    import mambagen.train.tokenizer as tt
    root = _write_images(tmp_path / "img", per_class=8)
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG not really")
    cfg = tt.TokenizerTrainConfig(data=str(root), out=str(tmp_path / "vq"), tokenizer="vq-tiny", image_size=16,
                                  batch_size=4, steps=1, num_workers=0, progress=False, device="cpu")
    with caplog.at_level("WARNING"):
        train, _ = tt.build_datasets(cfg)
    assert len(train) == 16 and "1 unreadable image(s) left out" in caplog.text and "broken.png" in caplog.text


# ------------------------------------------------------------------------------------ files we read
def test_paths_inside_our_files_stay_inside_their_folder(tmp_path):
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    meta = json.loads((d / "config.json").read_text())
    for bad in ("../elsewhere", "/etc"):
        meta["tokenizer"] = bad
        (d / "config.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="must be a relative path inside"):
            mambagen.load(d)


def test_another_tokenizer_must_make_the_same_ids(tmp_path, capsys):
    tok = mambagen.create_tokenizer("vq-tiny")
    other = mambagen.create_tokenizer("vq-tiny", image_size=64)        # same vocabulary, another size
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    mambagen.save_tokenizer(other, tmp_path / "other")
    _one_line(capsys, 2, main(["sample", "--model", str(d), "--tokenizer", str(tmp_path / "other"),
                               "--out", str(tmp_path / "s.png")]), "image_size 32 vs 64")


@pytest.mark.parametrize("field,value,needle", [
    ("d_model", "64", "AiMConfig.d_model must be an integer, got '64'"),
    ("n_layer", None, "AiMConfig.n_layer must be an integer, got None"),
    ("norm_f", 1, "AiMConfig.norm_f must be true or false"),
])
def test_config_json_with_wrong_types_is_one_line(tmp_path, capsys, field, value, needle):
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    meta = json.loads((d / "config.json").read_text())
    meta["config"][field] = value
    (d / "config.json").write_text(json.dumps(meta))
    _one_line(capsys, 2, main(["sample", "--model", str(d), "--out", str(tmp_path / "s.png")]), needle)


def test_integer_weights_for_float_parameters_are_refused(tmp_path):
    tok = mambagen.create_tokenizer("vq-tiny")
    d = mambagen.save_tokenizer(tok, tmp_path / "t")
    state = load_safetensors(d / "model.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].to(torch.int32)
    save_safetensors(d / "model.safetensors", state)
    with pytest.raises(CheckpointError, match=rf"dtype mismatches \(1\).*{key}: checkpoint torch.int32"):
        mambagen.load_tokenizer(d, verify=False)
    state[key] = state[key].to(torch.float16)             # float -> float is a precision choice
    save_safetensors(d / "model.safetensors", state)
    mambagen.load_tokenizer(d, verify=False)


def test_a_flipped_bit_is_caught_and_no_verify_skips_the_check(tmp_path, capsys):
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64)
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10                            # inside a tensor: safetensors itself cannot tell
    f.write_bytes(bytes(data))
    _one_line(capsys, 2, main(["sample", "--model", str(d), "--out", str(tmp_path / "s.png")]),
              "model.safetensors is corrupt")
    assert main(["sample", "--model", str(d), "--no-verify", "--per-class", "1", "--classes", "0",
                 "--out", str(tmp_path / "s.png")]) == 0


def test_tied_weights_are_stored_once_and_tied_again_on_load(tmp_path):
    from safetensors import safe_open
    gen = mambagen.create_model("aim-tiny")
    assert gen.head.weight is gen.tok_emb.weight
    d = mambagen.save_model(gen, tmp_path / "m", ema={k: v.clone() for k, v in gen.state_dict().items()})
    for name in ("model.safetensors", "ema.safetensors"):
        with safe_open(str(d / name), "pt") as f:
            assert "head.weight" not in f.keys() and "tok_emb.weight" in f.keys()
        state = load_safetensors(d / name)
        assert state["head.weight"] is state["tok_emb.weight"]
    loaded = mambagen.load(d)
    assert loaded.head.weight is loaded.tok_emb.weight and torch.equal(loaded.head.weight, gen.head.weight)


def test_convert_of_a_pickle_prints_only_our_line(tmp_path, capsys):
    import pickle
    f = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    f.write_bytes(pickle.dumps({"model": Boom()}))
    line = _one_line(capsys, 2, main(["convert", "aim", str(f), str(tmp_path / "out")]), "cannot be loaded safely")
    assert "weights_only" not in line and "pwned" not in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ flags and outputs
@pytest.mark.parametrize("argv", [
    ["sample", "--device", "gpu"],
    ["sample", "--device", "cuda"],
    ["tokenize", "--data", "x", "--tokenizer", "demo", "--out", "y", "--device", "cuda:7"],
])
def test_devices_this_machine_lacks_are_one_line(argv, tmp_path, capsys):
    if torch.cuda.is_available() and argv[-1] != "gpu":
        pytest.skip("a GPU is visible")
    _one_line(capsys, 2, main(argv + ["--out" if argv[0] == "sample" else "--num-workers",
                                      str(tmp_path / "s.png") if argv[0] == "sample" else "0"]), "--device")


def test_train_device_checked_before_the_folder_is_made(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    _one_line(capsys, 2, main(_train_args(tokens, out)[:-3] + ["--device", "gpu", "--no-progress"]), "--device 'gpu'")
    assert not out.exists()


@pytest.mark.parametrize("extra,needle", [
    (["--out", "grid.xyz"], "unsupported image extension .xyz"),
    (["--out", "grid.webp", "--scale", "200"], "larger than WEBP can store"),
    (["--scale", "0"], "--scale must be >= 1"),
    (["--nrow", "-2"], "--nrow must be >= 1"),
    (["--out", "afile/x.png"], "cannot be written"),
])
def test_sample_outputs_are_checked_before_sampling(tmp_path, capsys, monkeypatch, extra, needle):
    import mambagen.sample.pipeline as pipeline
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder")
    monkeypatch.setattr(pipeline.Sampler, "sample", lambda *a, **k: pytest.fail("sampled before the check"))
    _one_line(capsys, 2, main(["sample"] + extra), needle)


def test_samples_are_written_before_the_picture(tmp_path, monkeypatch, capsys):
    import mambagen.images as images
    monkeypatch.setattr(images, "save_image", lambda *a, **k: (_ for _ in ()).throw(ValueError("picture failed")))
    import mambagen.cli.sample as cli_sample
    rc = main(["sample", "--classes", "0", "--per-class", "2", "--npz", str(tmp_path / "s.npz"),
               "--out", str(tmp_path / "s.png")])
    assert rc == 2 and (tmp_path / "s.npz").exists() and cli_sample is not None
    assert np.load(tmp_path / "s.npz")["arr_0"].shape[0] == 2


def test_ctrl_c_during_sampling_is_one_word_and_exit_130(tmp_path, monkeypatch, capsys):
    import mambagen.sample.pipeline as pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Sampler, "sample", interrupted)
    assert main(["sample", "--out", str(tmp_path / "s.png")]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert not (tmp_path / "s.png").exists()


def test_edit_of_a_raster_model_shows_and_says_what_it_redraws(tmp_path, capsys):
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    img.save(tmp_path / "in.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:28, 20:28] = 255                                  # a small square, not a bottom band
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["edit", "--model", "demo", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--num", "1", "--scale", "1", "--out", str(tmp_path / "e.png")]) == 0
    err = capsys.readouterr().err
    assert "every row from the mask's first token row down is regenerated" in err
    grid = np.asarray(Image.open(tmp_path / "e.png"))
    region_panel = grid[2:66, 68:132]
    assert (region_panel[60, 5] != grid[2 + 60, 2 + 5]).any()   # a pixel far below the mask is greyed
    assert (region_panel[2, 5] == grid[2 + 2, 2 + 5]).all()     # rows above it are not


# ------------------------------------------------------------------------------------ files at rest
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_take_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        d = mambagen.save_tokenizer(mambagen.create_tokenizer("vq-tiny"), tmp_path / "t")
    finally:
        os.umask(old)
    for f in ("model.safetensors", "config.json"):
        assert (d / f).stat().st_mode & 0o777 == mode


def test_eval_reference_cache_notices_a_replaced_reference(tmp_path):
    from mambagen.eval.sets import fingerprint
    f = tmp_path / "ref.npz"
    np.savez(f, arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    st = f.stat()
    a = fingerprint(f)
    np.savez(f, arr_0=np.ones((2, 4, 4, 3), np.uint8))         # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))            # ... same mtime
    assert f.stat().st_size == st.st_size and fingerprint(f) != a


def test_the_demo_weights_ship_with_their_notice_and_digests():
    from mambagen.checkpoint import DEMO_DIR
    notice = (DEMO_DIR / "NOTICE").read_text()
    assert "Twemoji" in notice and "CC-BY 4.0" in notice and "Noto Emoji" in notice
    root = Path(__file__).resolve().parents[1]
    assert "Apache License" in (root / "LICENSE").read_text() and "CC-BY 4.0" in (root / "NOTICE").read_text()
    for d in (DEMO_DIR, DEMO_DIR / "tokenizer"):
        assert json.loads((d / "config.json").read_text())["files"]["model.safetensors"].startswith("sha256:")


def test_grad_clip_0_means_no_clipping_in_both_trainers(tokens, tmp_path):
    from mambagen.train.plumbing import clip_gradients
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert float(clip_gradients([p], 0)) == 5.0 and torch.equal(p.grad, torch.tensor([3.0, 4.0, 0.0]))
    torch.manual_seed(1)                                                   # the run's seed: its initial weights
    start = mambagen.create_model("aim-tiny", vocab_size=256, num_tokens=16, num_classes=2).state_dict()
    off = train(_cfg(tokens, tmp_path / "off", steps=2, grad_clip=0.0))
    huge = train(_cfg(tokens, tmp_path / "huge", steps=2, grad_clip=1e9))
    a, b = load_safetensors(off / "model.safetensors"), load_safetensors(huge / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)                       # 0 = no clipping, not zero gradients
    assert set(a) == set(start) and not torch.equal(a["tok_emb.weight"], start["tok_emb.weight"])   # it learned
