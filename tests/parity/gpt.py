"""Parity runner for `gpt` fixtures (official LlamaGen `Transformer` c2i + `generate`).

Everything is derived from the fixture's config and tensor shapes: teacher-forced logits (and
the official training-mode slice `[:, cls_token_num - 1:]`, read off the expected length),
the loss, and decoding with the official sampling arguments (`generate_args`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mambagen.convert.gpt import load_official_gpt
from mambagen.sample.config import SamplingConfig
from mambagen.sample.raster import generate_raster


def _official_sampling(args: dict, vocab: int) -> dict:
    """LlamaGen `sample()` arguments -> ours. `sample_logits=False` or top_k=1 is greedy."""
    greedy = not args.get("sample_logits", True) or args.get("top_k", 0) == 1
    top_k, top_p = args.get("top_k", 0), args.get("top_p", 1.0)
    return dict(temperature=0.0 if greedy else args.get("temperature", 1.0),
                top_k=min(top_k, vocab) if top_k > 0 else 0, top_p=top_p if 0 < top_p < 1 else 1.0)


def run(fixture) -> dict[str, torch.Tensor]:
    model = load_official_gpt(fixture.state(), fixture.meta["config"])
    expected, out = fixture.expected, {}

    codes = fixture.input("codes")
    logits, _ = model(codes, fixture.input("labels"))                 # (B, N, V); position i predicts codes[:, i]
    if "out.logits" in expected:                                       # official training keeps [:, cls_token_num-1:]
        logits = logits[:, logits.shape[1] - expected["out.logits"].shape[1]:]
    out["out.logits"] = logits
    targets = codes[:, codes.shape[1] - logits.shape[1]:]
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    out["out.loss"] = loss.reshape(expected["out.loss"].shape) if "out.loss" in expected else loss

    if "in.gen_labels" in fixture.tensors:
        args = fixture.meta.get("generate_args", {})
        labels = fixture.input("gen_labels")
        sampling = _official_sampling(args, model.config.vocab_size)
        cfg = float(args.get("cfg_scale", 1.0))
        cfg = cfg if cfg > 1.0 else 1.0                                # official: guidance only when > 1
        interval = args.get("cfg_interval", -1) if cfg > 1.0 else -1   # official: token t guided while t <= interval + 1
        res = generate_raster(model, labels, SamplingConfig(cfg_scale=cfg, cfg_interval=interval, **sampling),
                              torch.Generator().manual_seed(0), return_logits=True)
        tokens, step_logits = res.tokens, res.step_logits
        n = args.get("max_new_tokens", tokens.shape[1])                # official returns the new tokens only
        exp_tokens = expected.get("out.gen_tokens")
        out["out.gen_tokens"] = tokens[:, :n].to(exp_tokens.dtype if exp_tokens is not None else torch.int32)
        out["out.gen_step_logits"] = step_logits[:, :n]
    return out
