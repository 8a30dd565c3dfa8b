"""Parity runner for `arpg` fixtures: training-mode logits for given orders, greedy parallel decoding.

Everything comes from the fixture: the official config, the per-sample training orders, and
for each entry of `generation_runs` its `generate` arguments. The official sampler draws its
order from the global RNG, so each run's recorded order (`out.<run>.orders`, values 1..N) is
passed in; tokens, step logits, tokens per step and CFG scales are then all recomputed.
"""
from __future__ import annotations

import torch

from mambagen.convert.arpg import load_official_arpg
from mambagen.sample.config import SamplingConfig
from mambagen.sample.random_order import generate_random_order


def run(fixture) -> dict[str, torch.Tensor]:
    model = load_official_arpg(fixture.state(), fixture.meta["config"])
    N = model.config.num_tokens
    out = {}
    if "in.codes" in fixture.tensors:
        logits, loss = model(fixture.input("codes"), fixture.input("labels"), fixture.input("orders"), causal=True)
        out["out.logits"] = logits
        out["out.loss"] = loss.reshape(fixture.tensors.get("out.loss", loss).shape)
    for name, run in fixture.meta.get("generation_runs", {}).items():
        a = run["args"]
        if a.get("seq_len", N) != N:
            raise ValueError(f"{name}: seq_len {a['seq_len']} differs from block_size {N}")
        labels = fixture.tensors.get(f"in.{name}.labels", fixture.tensors.get("in.gen_labels"))
        recorded = fixture.tensors.get(f"out.{name}.orders")
        order = None if recorded is None else recorded - 1          # official values are RoPE rows 1..N
        sampling = SamplingConfig(
            steps=a.get("num_iter", 64), schedule=a.get("sample_schedule", "arccos"),
            cfg_scale=a.get("guidance_scale", 4.0), cfg_schedule=a.get("cfg_schedule", a.get("schedule", "linear")),
            temperature=a.get("temperature", 1.0), top_k=a.get("top_k", 0), top_p=a.get("top_p", 1.0))
        res = generate_random_order(model, labels, sampling, torch.Generator().manual_seed(0), order=order,
                                    return_logits=True)
        for what, ours in (("tokens_per_step", res.tokens_per_step), ("cfg_scale_per_step", res.cfg_scales)):
            if what in run and [float(x) for x in run[what]] != [float(x) for x in ours]:
                raise AssertionError(f"{name}: {what} {ours} != official {run[what]}")
        out[f"out.{name}.orders"] = res.orders[0] + 1
        out[f"out.{name}.tokens"] = res.tokens
        out[f"out.{name}.step_logits"] = res.step_logits
    return out
