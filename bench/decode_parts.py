"""Where one AiM-L decode step goes, measured inside CUDA graphs (as the sampler runs it).

Each part is captured 48 times in a row (one per layer, each with its own weights / state, so
nothing is served from L2 that would not be in decoding) and the graph replayed; the result is
microseconds per layer. Candidates for the matmuls (cuBLAS vs our split-K Triton kernel) and for
the fused Mamba2 kernel's launch configuration are timed side by side, then the whole graphed step.
Usage: python bench/decode_parts.py OUT.json [rows]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

import mambagen
from mambagen.kernels.mamba2_step import mamba2_step_fused
from mambagen.kernels.skinny_linear import skinny_linear
from mambagen.models.registry import family_of
from mambagen.sample.config import SamplingConfig
from mambagen.sample.fast import GraphedRasterSampler

L, D, DI, NH, P, N = 48, 1024, 2048, 32, 64, 128
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 32
dev, dt = "cuda", torch.bfloat16


def per_layer_us(fn, reps=50):
    """Replay a graph of fn() (which runs all 48 layers' part) and return microseconds per layer."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(), fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / reps / L


@torch.no_grad()
def main():
    res = {"rows": rows, "device": torch.cuda.get_device_name(), "torch": torch.__version__, "parts_us_per_layer": {}}
    out = res["parts_us_per_layer"]
    tiny = torch.zeros(1, device=dev)
    out["empty kernel (launch latency in a graph)"] = per_layer_us(lambda: [tiny.add_(1) for _ in range(L)])
    h_in, h_out = torch.randn(rows, D, device=dev, dtype=dt), torch.randn(rows, DI, device=dev, dtype=dt)
    w_in = [torch.randn(2 * DI + 2 * N + NH, D, device=dev, dtype=dt) * 0.02 for _ in range(L)]
    w_out = [torch.randn(D, DI, device=dev, dtype=dt) * 0.02 for _ in range(L)]
    for name, a, ws in (("in_proj", h_in, w_in), ("out_proj", h_out, w_out)):
        out[f"{name} cuBLAS"] = per_layer_us(lambda: [F.linear(a, w) for w in ws])
        ref = F.linear(a, ws[0]).float()
        for split in (4, 8):
            for bn in (16, 32):
                for bk, stages in ((64, 4), (128, 3), (256, 2)):
                    if a.shape[1] % (split * bk):
                        continue
                    kw = dict(split=split, block_n=bn, block_k=bk, num_stages=stages)
                    try:
                        y = skinny_linear(a, ws[0], **kw)
                        err = ((y.float().sum(0) if split > 1 else y.float()) - ref).norm() / ref.norm()
                        t = per_layer_us(lambda: [skinny_linear(a, w, **kw) for w in ws])
                        out[f"{name} triton split{split} n{bn} k{bk} s{stages}"] = t
                        res.setdefault("skinny_rel_err", {})[f"{name} {kw}"] = err.item()
                    except Exception as e:   # a config that does not compile/fit: record and go on
                        res.setdefault("errors", []).append(f"{name} {kw}: {e!r}"[:300])
    # the fused Mamba2 kernel (conv + SSM + skip + gate) vs the SSM-only kernel, AiM-L shapes
    from mambagen.kernels.ssm_step import ssm_step_inplace
    states = [torch.randn(rows, NH, P, N, device=dev, dtype=dt) for _ in range(L)]
    pairs = [torch.randn(2, rows, DI + 2 * N, 3, device=dev, dtype=dt) for _ in range(L)]
    zx = torch.randn(rows, 2 * DI + 2 * N + NH, device=dev, dtype=dt)
    cw, cb = torch.randn(DI + 2 * N, 4, device=dev, dtype=dt), torch.randn(DI + 2 * N, device=dev, dtype=dt)
    dtb, alog, Dp = torch.randn(NH, device=dev), torch.randn(NH, device=dev), torch.randn(NH, device=dev)
    idx = torch.zeros((), dtype=torch.long, device=dev)
    x, dtt = torch.randn(rows, NH, P, device=dev, dtype=dt), torch.rand(rows, NH, device=dev)
    Bm, Cm = torch.randn(rows, 1, N, device=dev, dtype=dt), torch.randn(rows, 1, N, device=dev, dtype=dt)
    others = [torch.empty_like(s) for s in states]
    out["copy of one layer's state (read + write, the bandwidth floor)"] = per_layer_us(
        lambda: [o.copy_(s) for o, s in zip(others, states)])
    others = None   # free it before the next timings (the lambdas above have run)
    out["SSM-only kernel (previous)"] = per_layer_us(lambda: [ssm_step_inplace(s, x, dtt, -alog.exp(), Bm, Cm) for s in states])
    for bp, nw in ((16, 4), (32, 4), (16, 8), (8, 4)):   # (streaming cache hints on the state: no difference, run6)
        kw = dict(block_p=bp, num_warps=nw)
        out[f"fused mamba2 step p{bp} w{nw}"] = per_layer_us(
            lambda: [mamba2_step_fused(zx, c, s, idx, cw, cb, dtb, alog, Dp, ngroups=1, **kw)
                     for s, c in zip(states, pairs)])
    # the kernel between blocks (previous block's update + norm + adaLN), by split-K slices
    from mambagen.kernels.residual_norm import residual_norm_modulate
    xs, gs = torch.randn(rows, D, device=dev), torch.randn(rows, DI, device=dev, dtype=dt)
    mod, nw_ = torch.randn(rows, 3, D, device=dev, dtype=dt), torch.ones(D, device=dev, dtype=dt)
    for split in (4, 8):
        parts = torch.randn(split, rows, D, device=dev)
        out[f"residual + norm + adaLN kernel, {split} slices"] = per_layer_us(
            lambda: [residual_norm_modulate(xs, mod, nw_, 1e-5, dt, gs, parts, mod[:, 2], 1e-5, 1) for _ in range(L)])
    states = pairs = w_in = w_out = None   # freed before the model loads
    # the whole step as the sampler graphs it (per layer = per step / 48)
    torch.manual_seed(0)
    model = mambagen.create_model("aim-l").to(dev, dt).eval()
    sampler = GraphedRasterSampler(model, family_of(model).fast, rows // 2, SamplingConfig(cfg_scale=1.5))
    labels = torch.arange(rows // 2, device=dev)
    sampler.generate(labels)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sampler.index.zero_()                       # the step graph advances the index: stay inside the image
    sampler.step_graph.replay()
    start.record()
    for _ in range(50):
        sampler.step_graph.replay()
    end.record()
    torch.cuda.synchronize()
    res["whole_step_ms"] = start.elapsed_time(end) / 50
    out["whole graphed decode step (per layer)"] = res["whole_step_ms"] * 1000 / L
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        sampler.generate(labels)
    torch.cuda.synchronize()
    res["generate_s_per_batch"] = (time.perf_counter() - t0) / 3
    res["outside_steps_ms"] = res["generate_s_per_batch"] * 1000 - 255 * res["whole_step_ms"]
    res["state_mb_per_layer"] = rows * NH * P * N * 2 / 1e6
    res["weights_mb_per_layer"] = ((2 * DI + 2 * N + NH) * D + D * DI) * 2 / 1e6
    json.dump(res, open(sys.argv[1], "w"), indent=1)
    for k, v in sorted(out.items(), key=lambda kv: kv[1]):
        print(f"{v:8.2f} us  {k}")


if __name__ == "__main__":
    main()
