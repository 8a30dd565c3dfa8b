"""The fused Mamba2 decode kernel with several heads per program (B and C's conv computed once for
them), AiM-L shapes: per-layer microseconds inside CUDA graphs for launch configurations, then the
whole graphed AiM-L step and batch for the candidates, and AiM-B's greedy tokens for each (bf16) vs 1 head.
Usage: python bench/fused_heads.py OUT.json"""
import json
import sys
import time

import torch

import mambagen
from mambagen.kernels import mamba2_step
from mambagen.sample.fast import GraphedRasterSampler

sys.path.insert(0, "bench")
from decode_parts import DI, L, N, NH, P, dev, dt, per_layer_us  # noqa: E402

rows = 32
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "parts_us_per_layer": {}, "whole": []}
states = [torch.randn(rows, NH, P, N, device=dev, dtype=dt) for _ in range(L)]
pairs = [torch.randn(2, rows, DI + 2 * N, 3, device=dev, dtype=dt) for _ in range(L)]
zx = torch.randn(rows, 2 * DI + 2 * N + NH, device=dev, dtype=dt)
cw, cb = torch.randn(DI + 2 * N, 4, device=dev, dtype=dt), torch.randn(DI + 2 * N, device=dev, dtype=dt)
dtb, alog, Dp = torch.randn(NH, device=dev), torch.randn(NH, device=dev), torch.randn(NH, device=dev)
idx = torch.zeros((), dtype=torch.long, device=dev)
out = res["parts_us_per_layer"]
others = [torch.empty_like(s) for s in states]
out["copy of one layer's state (the bandwidth floor)"] = per_layer_us(lambda: [o.copy_(s) for o, s in zip(others, states)])
del others
for heads, bp, nw in ((1, 16, 4), (2, 16, 4), (4, 16, 4), (4, 16, 8), (8, 16, 8), (2, 32, 4), (4, 32, 8), (8, 8, 4)):
    kw = dict(heads=heads, block_p=bp, num_warps=nw)
    try:
        out[f"fused heads{heads} p{bp} w{nw}"] = per_layer_us(
            lambda: [mamba2_step.mamba2_step_fused(zx, c, s, idx, cw, cb, dtb, alog, Dp, ngroups=1, **kw)
                     for s, c in zip(states, pairs)])
    except Exception as e:   # noqa: BLE001 - a configuration that does not fit is a result too
        res.setdefault("errors", []).append(f"{kw}: {e!r}"[:300])
for k, v in sorted(out.items(), key=lambda kv: kv[1]):
    print(f"{v:8.2f} us  {k}")
del states, pairs
model = mambagen.create_model("aim-l").to(dev, dt).eval()
small = mambagen.create_model("aim-b").to(dev, dt).eval()
with torch.no_grad():
    for p in small.parameters():
        p.add_(torch.randn_like(p) * 0.02)
labels = torch.arange(16, device=dev)
ref = None
for heads in (1, 2, 4):
    mamba2_step.HEADS_PER_PROGRAM = heads
    torch._dynamo.reset()
    rec = {"heads_per_program": heads}
    tokens = GraphedRasterSampler(small, 4, cfg_scale=2.0, top_k=1).generate(labels[:4])
    ref = tokens if ref is None else ref
    rec["aim_b_greedy_tokens_equal_1_head"] = int((tokens == ref).sum())
    sampler = GraphedRasterSampler(model, 16, cfg_scale=1.5)
    sampler.generate(labels)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sampler.index.zero_()
    sampler.step_graph.replay()
    start.record()
    for _ in range(50):
        sampler.step_graph.replay()
    end.record()
    torch.cuda.synchronize()
    rec["step_ms"] = start.elapsed_time(end) / 50
    t = time.perf_counter()
    for _ in range(3):
        sampler.generate(labels)
    torch.cuda.synchronize()
    rec["images_per_s"] = 16 * 3 / (time.perf_counter() - t)
    res["whole"].append(rec)
    print(json.dumps(rec))
    del sampler
json.dump(res, open(sys.argv[1], "w"), indent=1)
