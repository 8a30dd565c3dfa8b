"""Parity runner for `aim` fixtures: teacher-forced logits and greedy CFG decoding."""
from __future__ import annotations

import torch

from mambagen.convert import load_official_aim
from mambagen.sample.config import SamplingConfig
from mambagen.sample.raster import generate_raster


def run(fixture) -> dict[str, torch.Tensor]:
    model, _ = load_official_aim(fixture.state(), fixture.meta["config"])
    out = {}
    logits, _ = model(fixture.input("codes"), fixture.input("labels"))
    out["out.logits"] = logits
    args = fixture.meta.get("generate_args", {})
    if "in.gen_labels" in fixture.tensors:
        sampling = SamplingConfig(cfg_scale=args.get("cfg_scale", 1.0), temperature=args.get("temperature", 1.0),
                                  top_k=args.get("top_k", 0), top_p=args.get("top_p", 1.0))
        res = generate_raster(model, fixture.input("gen_labels"), sampling, return_logits=True)
        out["out.gen_tokens"] = res.tokens
        out["out.gen_step_logits"] = res.step_logits
    return out
