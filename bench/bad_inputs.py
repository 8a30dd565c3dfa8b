"""Bad input, tried as a user would: each case runs `python -m mambagen ...` in a fresh process and passes
when it exits non-zero with one error line (argparse's own errors: its usage line and one error line) and
no traceback. Writes bench/results/bad_inputs.{json,md}.

    python bench/bad_inputs.py [--out bench/results/bad_inputs] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def build_fixtures(root: Path) -> dict:
    import mambagen
    from mambagen.data.tokens import tokenize_dataset
    from mambagen.io import load_safetensors, save_safetensors

    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    gen = mambagen.create_model("aim-tiny", vocab_size=tok.codebook_size, num_tokens=64, num_classes=2)
    f = {"root": root}
    f["pipe"] = mambagen.save_model(gen, root / "pipe", tokenizer=tok)
    f["tok"] = mambagen.save_tokenizer(tok, root / "tok")
    f["tok64"] = mambagen.save_tokenizer(mambagen.create_tokenizer("vq-tiny", image_size=64), root / "tok64")

    def variant(name, edit_meta=None, edit_weights=None, raw_config=None):
        d = root / name
        shutil.copytree(f["pipe"], d)
        if edit_meta:
            meta = json.loads((d / "config.json").read_text())
            edit_meta(meta)
            (d / "config.json").write_text(json.dumps(meta))
        if raw_config is not None:
            (d / "config.json").write_text(raw_config)
        if edit_weights:
            state = load_safetensors(d / "model.safetensors")
            edit_weights(state)
            save_safetensors(d / "model.safetensors", state)
            meta = json.loads((d / "config.json").read_text())
            meta.pop("files", None)                      # so the weight check, not the digest, answers
            (d / "config.json").write_text(json.dumps(meta))
        return d

    def nan(state):
        state["head.weight"][0, 0] = float("nan")

    def as_int(state):
        state["norm_f.weight"] = state["norm_f.weight"].to(torch.int32)

    f["nan"] = variant("nan", edit_weights=nan)
    f["int32"] = variant("int32", edit_weights=as_int)
    f["d_model_str"] = variant("d_model_str", lambda m: m["config"].update(d_model="64"))
    f["n_layer_null"] = variant("n_layer_null", lambda m: m["config"].update(n_layer=None))
    f["config_list"] = variant("config_list", lambda m: m.update(config=[]))
    f["tok_escape"] = variant("tok_escape", lambda m: m.update(tokenizer="../tok"))
    f["foreign"] = variant("foreign", raw_config=json.dumps({"d_model": 64}))
    f["not_json"] = variant("not_json", raw_config="{not json")
    torn = variant("torn")
    data = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(data[: len(data) // 2])
    f["torn"] = torn
    flipped = variant("flipped")
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x10
    (flipped / "model.safetensors").write_bytes(bytes(data))
    f["flipped"] = flipped

    images = root / "images"
    for c in range(2):
        (images / f"c{c}").mkdir(parents=True)
        for i in range(8):
            a = np.full((32, 32, 3), 30 + 100 * c, np.uint8)
            Image.fromarray(a).save(images / f"c{c}" / f"{i}.png")
    f["images"] = images
    (root / "noclasses").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "noclasses" / "x.png")
    f["image"] = images / "c0" / "0.png"
    (root / "notimage.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "blackmask.png")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(root / "smallmask.png")

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo PWNED",))

    (root / "evil.pt").write_bytes(pickle.dumps({"model": Boom()}))
    (root / "random.bin").write_bytes(os.urandom(4096))
    save_safetensors(root / "wrongkeys.safetensors", {"x": torch.zeros(3)})

    class Squares(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.full((3, 32, 32), -1.0 + (i % 2)), i % 2

    tokens = tokenize_dataset(tok, Squares(), root / "tokens", batch_size=8, progress=False)
    f["tokens"] = tokens

    def shard_variant(name, edit_meta=None, edit_shard=None):
        d = root / name
        shutil.copytree(tokens, d)
        meta = json.loads((d / "meta.json").read_text())
        if edit_meta:
            edit_meta(meta)
            (d / "meta.json").write_text(json.dumps(meta))
        if edit_shard:
            part = load_safetensors(d / meta["shards"][0]["file"])
            edit_shard(part)
            save_safetensors(d / meta["shards"][0]["file"], part)
        return d

    def put(key, value):
        def edit(part):
            t = part[key].clone()
            t.view(-1)[0] = value
            part[key] = t
        return edit

    f["tok_big"] = shard_variant("tok_big", edit_shard=put("tokens", 9999))
    f["tok_neg"] = shard_variant("tok_neg", edit_shard=put("tokens", -1))
    f["lab_big"] = shard_variant("lab_big", edit_shard=put("labels", 2))
    f["lab_neg"] = shard_variant("lab_neg", edit_shard=put("labels", -1))
    f["tok_float"] = shard_variant("tok_float", edit_shard=lambda p: p.update(tokens=p["tokens"].float()))
    f["ntok_str"] = shard_variant("ntok_str", edit_meta=lambda m: m.update(num_tokens="64"))
    f["vocab_small"] = shard_variant("vocab_small", edit_meta=lambda m: m.update(vocab_size=4))
    f["shard_escape"] = shard_variant("shard_escape", edit_meta=lambda m: m["shards"][0].update(
        file="../tokens/shard_00000.safetensors"))
    meta_bad = shard_variant("meta_bad")
    (meta_bad / "meta.json").write_text("{")
    f["meta_bad"] = meta_bad

    # a finished run, for the used-folder and resume cases
    run = root / "run"
    subprocess.run([sys.executable, "-m", "mambagen", "train", "--data", str(tokens), "--out", str(run), "--model",
                    "aim-tiny", "--steps", "2", "--batch-size", "4", "--ckpt-every", "2", "--eval-every", "100",
                    "--device", "cpu", "--no-progress"], check=True, capture_output=True)
    f["run"] = run
    vq = root / "vqrun"
    subprocess.run([sys.executable, "-m", "mambagen", "train-tokenizer", "--data", str(images), "--out", str(vq),
                    "--tokenizer", "vq-tiny", "--image-size", "32", "--batch-size", "4", "--steps", "1",
                    "--eval-every", "1", "--num-workers", "0", "--no-progress", "--device", "cpu"],
                   check=True, capture_output=True)
    f["vqrun"] = vq
    return f


def cases(f: dict) -> list[tuple[str, list[str]]]:
    r = f["root"]
    out = str(r / "out.png")
    S = ["sample", "--model", str(f["pipe"]), "--out", out, "--per-class", "1"]
    E = ["edit", "--model", str(f["pipe"]), "--image", str(f["image"]), "--out", str(r / "edit.png")]
    T = ["train", "--data", str(f["tokens"]), "--model", "aim-tiny", "--steps", "2", "--batch-size", "4",
         "--device", "cpu", "--no-progress"]
    V = ["train-tokenizer", "--data", str(f["images"]), "--tokenizer", "vq-tiny", "--image-size", "32",
         "--batch-size", "4", "--steps", "1", "--num-workers", "0", "--no-progress", "--device", "cpu"]
    K = ["tokenize", "--data", str(f["images"]), "--tokenizer", str(f["tok"]), "--out", str(r / "tk")]
    return [
        ("sample: unknown --model", ["sample", "--model", "no-such-model", "--out", out]),
        ("sample: --model is a tokenizer", ["sample", "--model", str(f["tok"]), "--out", out]),
        ("sample: class id out of range", S + ["--classes", "99"]),
        ("sample: class ids not integers", S + ["--classes", "a,b"]),
        ("sample: negative guidance", S + ["--cfg", "-1"]),
        ("sample: top-p 0", S + ["--top-p", "0"]),
        ("sample: top-p 1.5", S + ["--top-p", "1.5"]),
        ("sample: negative temperature", S + ["--temperature", "-1"]),
        ("sample: negative top-k", S + ["--top-k", "-1"]),
        ("sample: --per-class 0", S + ["--per-class", "0"]),
        ("sample: --batch-size 0", S + ["--batch-size", "0"]),
        ("sample: --scale 0", S + ["--scale", "0"]),
        ("sample: --scale -2", S + ["--scale", "-2"]),
        ("sample: --nrow 0", S + ["--nrow", "0"]),
        ("sample: --out x.xyz", S[:-4] + ["--out", str(r / "x.xyz")]),
        ("sample: grid too large for WebP", S[:-4] + ["--out", str(r / "x.webp"), "--scale", "300"]),
        ("sample: --out under a file", S[:-4] + ["--out", str(f["image"]) + "/x.png"]),
        ("sample: --npz under a file", S + ["--npz", str(f["image"]) + "/x.npz"]),
        ("sample: --device gpu", S + ["--device", "gpu"]),
        ("sample: --device cuda on a CPU build", S + ["--device", "cuda"]),
        ("sample: --device cuda:9", S + ["--device", "cuda:9"]),
        ("sample: --tokenizer missing", S + ["--tokenizer", str(r / "nope")]),
        ("sample: --tokenizer of another size", S + ["--tokenizer", str(f["tok64"])]),
        ("sample: an option AiM does not read (--steps)", S + ["--steps", "8"]),
        ("sample: torn model.safetensors", ["sample", "--model", str(f["torn"]), "--out", out]),
        ("sample: a flipped bit", ["sample", "--model", str(f["flipped"]), "--out", out]),
        ("sample: NaN weights", ["sample", "--model", str(f["nan"]), "--out", out]),
        ("sample: int32 weights for floats", ["sample", "--model", str(f["int32"]), "--out", out]),
        ("sample: d_model \"64\"", ["sample", "--model", str(f["d_model_str"]), "--out", out]),
        ("sample: n_layer null", ["sample", "--model", str(f["n_layer_null"]), "--out", out]),
        ("sample: config is a list", ["sample", "--model", str(f["config_list"]), "--out", out]),
        ("sample: tokenizer path ../", ["sample", "--model", str(f["tok_escape"]), "--out", out]),
        ("sample: foreign config.json", ["sample", "--model", str(f["foreign"]), "--out", out]),
        ("sample: config.json not JSON", ["sample", "--model", str(f["not_json"]), "--out", out]),
        ("sample: --ema without EMA weights", S + ["--ema"]),
        ("edit: --image missing", E[:4] + ["--image", str(r / "nope.png"), "--out", str(r / "e.png")]),
        ("edit: --image not an image", E[:4] + ["--image", str(r / "notimage.png"), "--out", str(r / "e.png")]),
        ("edit: inpaint without --mask", E),
        ("edit: mask of another size", E + ["--mask", str(r / "smallmask.png")]),
        ("edit: mask selects nothing", E + ["--mask", str(r / "blackmask.png")]),
        ("edit: --num 0", E + ["--mode", "outpaint", "--num", "0"]),
        ("edit: --canvas on AiM", E + ["--canvas", "16"]),
        ("edit: --out x.xyz", E[:-2] + ["--out", str(r / "e.xyz"), "--mode", "outpaint"]),
        ("convert: a malicious pickle", ["convert", "aim", str(r / "evil.pt"), str(r / "cv")]),
        ("convert: random bytes", ["convert", "aim", str(r / "random.bin"), str(r / "cv")]),
        ("convert: unknown family", ["convert", "nosuch", str(r / "random.bin"), str(r / "cv")]),
        ("convert: file missing", ["convert", "aim", str(r / "nope.pt"), str(r / "cv")]),
        ("convert: safetensors with foreign keys", ["convert", "gpt", str(r / "wrongkeys.safetensors"), str(r / "cv")]),
        ("tokenize: --data missing", K[:2] + [str(r / "nope")] + K[3:]),
        ("tokenize: --data is a file", K[:2] + [str(f["image"])] + K[3:]),
        ("tokenize: no class folders", K[:2] + [str(r / "noclasses")] + K[3:]),
        ("tokenize: --tokenizer missing", K[:4] + [str(r / "nope")] + K[5:]),
        ("tokenize: --device gpu", K + ["--device", "gpu"]),
        ("train: --data missing", ["train", "--data", str(r / "nope"), "--out", str(r / "t1"), "--device", "cpu"]),
        ("train: meta.json not JSON", T[:2] + [str(f["meta_bad"])] + T[3:] + ["--out", str(r / "t2")]),
        ("train: token id >= vocab", T[:2] + [str(f["tok_big"])] + T[3:] + ["--out", str(r / "t3")]),
        ("train: token id < 0", T[:2] + [str(f["tok_neg"])] + T[3:] + ["--out", str(r / "t4")]),
        ("train: label >= classes", T[:2] + [str(f["lab_big"])] + T[3:] + ["--out", str(r / "t5")]),
        ("train: label < 0", T[:2] + [str(f["lab_neg"])] + T[3:] + ["--out", str(r / "t6")]),
        ("train: float tokens", T[:2] + [str(f["tok_float"])] + T[3:] + ["--out", str(r / "t7")]),
        ("train: num_tokens a string", T[:2] + [str(f["ntok_str"])] + T[3:] + ["--out", str(r / "t8")]),
        ("train: vocab smaller than the ids", T[:2] + [str(f["vocab_small"])] + T[3:] + ["--out", str(r / "t9")]),
        ("train: shard path ../", T[:2] + [str(f["shard_escape"])] + T[3:] + ["--out", str(r / "t10")]),
        ("train: unknown --model", T[:4] + ["aim-huge"] + T[5:] + ["--out", str(r / "t11")]),
        ("train: --model-overrides not JSON", T + ["--model-overrides", "{", "--out", str(r / "t12")]),
        ("train: --model-overrides wrong type", T + ["--model-overrides", '{"d_model": "x"}', "--out", str(r / "t13")]),
        ("train: batch larger than the data", T[:-6] + ["--batch-size", "64", "--device", "cpu", "--out", str(r / "t14")]),
        ("train: --batch-size 0", T[:-6] + ["--batch-size", "0", "--device", "cpu", "--out", str(r / "t15")]),
        ("train: a folder holding a run", T + ["--out", str(f["run"])]),
        ("train: --resume with another model", T[:4] + ["gpt-tiny"] + T[5:] + ["--out", str(f["run"]), "--resume"]),
        ("train: --resume with another batch size", T[:-6] + ["--batch-size", "2", "--steps", "4", "--device", "cpu",
                                                              "--out", str(f["run"]), "--resume"]),
        ("train: --device gpu", T[:-3] + ["--device", "gpu", "--out", str(r / "t16")]),
        ("train: --tokenizer that did not make the tokens", T + ["--tokenizer", str(f["tok64"]), "--out", str(r / "t17")]),
        ("train-tokenizer: --data missing", V[:2] + [str(r / "nope")] + V[3:] + ["--out", str(r / "v1")]),
        ("train-tokenizer: --image-size 0", V[:6] + ["0"] + V[7:] + ["--out", str(r / "v2")]),
        ("train-tokenizer: a folder holding a run", V + ["--out", str(f["vqrun"])]),
        ("train-tokenizer: --resume without a checkpoint", V + ["--out", str(r / "v3"), "--resume"]),
        ("train-tokenizer: --device gpu", V[:-2] + ["--device", "gpu", "--out", str(r / "v4")]),
        ("train-tokenizer: batch larger than the data", V[:8] + ["64"] + V[9:] + ["--out", str(r / "v5")]),
        ("sample-many: --per-class 0", ["sample-many", "--model", str(f["pipe"]), "--out", str(r / "sm"),
                                        "--per-class", "0"]),
        ("sample-many: NaN weights", ["sample-many", "--model", str(f["nan"]), "--out", str(r / "sm2"),
                                      "--per-class", "1"]),
        ("eval: --samples missing", ["eval", "--samples", str(r / "nope.npz"), "--ref", str(f["images"])]),
        ("eval-nll: --data missing", ["eval-nll", "--model", str(f["pipe"]), "--data", str(r / "nope")]),
        ("eval-tokenizer: --data missing", ["eval-tokenizer", "--tokenizer", str(f["tok"]), "--data", str(r / "nope")]),
        ("eval-tokenizer: --judge not a judge", ["eval-tokenizer", "--tokenizer", str(f["tok"]), "--data",
                                                 str(f["images"]), "--judge", str(f["tok"])]),
        ("train-tokenizer: --perceptual-weights a folder that is no judge",
         V + ["--perceptual-weights", str(f["tok"]), "--out", str(r / "v6")]),
        ("bench: --train with an unknown option", ["bench", "--generate", "--decode", "--train", "aim-tiny:fused",
                                                   "--device", "cpu", "--out", str(r / "b1")]),
        ("data emoji: --no-other at the category level", ["data", "emoji", str(r / "e1"), "--no-other"]),
        ("judge-samples: --judge missing", ["judge-samples", "--judge", str(r / "nope"), "--samples",
                                            str(r / "x.npz"), "--ref", str(f["images"])]),
    ]


def judge(rc: int, stderr: str) -> tuple[bool, str]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc == 0:
        return False, "exit 0"
    if "Traceback" in stderr:
        return False, "traceback"
    errors = [ln for ln in lines if ln.startswith("error: ") or ": error: " in ln]
    usage = [ln for ln in lines if ln.startswith("usage: ") or ln.startswith("  ")]
    if len(errors) == 1 and len(lines) - len(usage) == 1:
        return True, errors[0][:300]
    return False, f"{len(lines)} lines: " + " | ".join(lines)[:300]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/bad_inputs")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mambagen-bad-"))
    f = build_fixtures(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

    def run(case):
        name, argv = case
        p = subprocess.run([sys.executable, "-m", "mambagen", *argv], env=env, capture_output=True, text=True,
                           timeout=300)
        ok, why = judge(p.returncode, p.stderr)
        if "PWNED" in p.stdout + p.stderr:
            ok, why = False, "pickled code ran"
        return {"case": name, "rc": p.returncode, "ok": ok, "said": why.replace(str(root), "$TMP")}

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, cases(f)))
    passed = sum(r["ok"] for r in results)
    report = {"tried": len(results), "one_line_nonzero": passed, "device": "cpu", "torch": torch.__version__,
              "command": "python bench/bad_inputs.py", "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# Bad inputs: {passed} of {len(results)} give one line and a non-zero exit", "",
          f"`{report['command']}` (CPU, torch {torch.__version__}); each case is a fresh `python -m mambagen` "
          "process.", "", "| case | exit | ok | what it said |", "|---|---|---|---|"]
    md += [f"| {r['case']} | {r['rc']} | {'yes' if r['ok'] else '**no**'} | {r['said'].replace('|', '/')} |"
           for r in results]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print(f"{passed} of {len(results)} bad inputs give one line and a non-zero exit")
    for r in results:
        if not r["ok"]:
            print(f"  FAIL {r['case']}: rc {r['rc']}: {r['said']}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
