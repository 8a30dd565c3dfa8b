"""A trained AiM run's best/ as the shipped demo pipeline: its weights (or with --ema its EMA) and the
tokenizer in float16, the class names, the recommended CFG and what the demo is, in one checkpoint folder.

    python bench/export_demo.py RUN/best OUT_DIR [--ema] --cfg 4.0 --data "mambagen data emoji ..." \\
        --trained "H200, bench/demo_v2.sh ..." --notice DATA/NOTICE

OUT_DIR is written beside itself and renamed into place (mambagen/assets/emoji-aim-demo is the shipped one)."""
import argparse
import os

import torch

from mambagen.checkpoint import class_names, load, save_model
from mambagen.io import read_json
from mambagen.train.plumbing import replace_folder


WEIGHTS_NOTICE = """The emoji demo pipeline (an AiM generator and its VQ tokenizer, weights only), part of mambagen,
Apache License 2.0. The weights were trained on the {n}-class emoji images described below, which keep their
own licenses; samples of the model may resemble that art.

"""


def export(best: str, out: str, cfg: float, data: str, trained: str, status: str | None = None,
           notice: str | None = None, ema: bool = False) -> None:
    meta = read_json(os.path.join(best, "config.json"))
    if ema and "ema.safetensors" not in meta.get("files", {}):
        raise SystemExit(f"{best} holds no EMA weights: leave out --ema")
    pipe = load(best, ema=ema)
    names = class_names(meta)
    if len(names) != pipe.generator.config.num_classes:
        n = pipe.generator.config.num_classes
        raise SystemExit(f"{best}: config.json names {len(names)} classes, the model has {n}")
    bits = meta.get("val_bits_per_token")
    kept = (f"{'EMA weights, ' if ema else ''}kept at step {meta.get('step')}: the lowest held-out bits/token "
            f"({bits:.2f})" if bits is not None else "the run's final weights")
    demo = {"classes": names, "data": data, "trained": trained, "status": status or kept}
    extra = {"demo": demo, "sampling": {"cfg": cfg}, "step": meta.get("step"), "run": meta.get("run")}
    if bits is not None:
        extra["val_bits_per_token"] = bits

    def fill(new):
        save_model(pipe.generator.to(torch.float16), new, tokenizer=pipe.tokenizer.to(torch.float16), extra=extra)
        if notice:     # the image licenses travel with the weights, under a line saying what is shipped
            (new / "NOTICE").write_text(WEIGHTS_NOTICE.format(n=len(names)) + open(notice).read())

    replace_folder(out, fill)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out}: {len(names)} classes, cfg {cfg}, {size / 2**20:.1f} MiB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("best", help="the run's best/ (or final/) folder: a pipeline with its tokenizer")
    p.add_argument("out")
    p.add_argument("--ema", action="store_true", help="ship the EMA weights (when they score better held out)")
    p.add_argument("--cfg", type=float, required=True, help="the recommended guidance scale (config.json sampling)")
    p.add_argument("--data", required=True, help="how the training data was built")
    p.add_argument("--trained", required=True, help="where and with which recipe the weights were trained")
    p.add_argument("--status", default=None)
    p.add_argument("--notice", default=None, help="the data's NOTICE (image licenses), copied beside the weights")
    a = p.parse_args()
    export(a.best, a.out, a.cfg, a.data, a.trained, a.status, a.notice, a.ema)


if __name__ == "__main__":
    main()
