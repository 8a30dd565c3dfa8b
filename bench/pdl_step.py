"""AiM-L's graphed decode step with the fused path's launch options, side by side (batch 16 with CFG,
bf16): programmatic dependent launch of our Triton kernels off / on, in_proj by cuBLAS / by our
split-K kernel (which, launched with PDL, lets the fused Mamba2 kernel's state loads start during it).
Also checks that each variant samples the same greedy tokens as the first (bf16, AiM-B) and times whole batches.
Usage: python bench/pdl_step.py OUT.json"""
import json
import sys
import time

import torch

import mambagen
from mambagen.sample import fast

L = 48
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "variants": []}
model = mambagen.create_model("aim-l").cuda().to(torch.bfloat16).eval()
small = mambagen.create_model("aim-b").cuda().to(torch.bfloat16).eval()
with torch.no_grad():
    for p in small.parameters():   # adaLN-zero init would make every block an identity
        p.add_(torch.randn_like(p) * 0.02)
labels = torch.arange(16, device="cuda")
ref_tokens = None
for pdl, in_proj in ((False, "cublas"), (True, "cublas"), (False, "skinny"), (True, "skinny")):
    fast.FUSED_PDL, fast.IN_PROJ = pdl, in_proj
    torch._dynamo.reset()
    rec = {"pdl": pdl, "in_proj": in_proj}
    try:
        greedy = fast.GraphedRasterSampler(small, 4, cfg_scale=2.0, top_k=1)
        tokens = greedy.generate(labels[:4])
        ref_tokens = tokens if ref_tokens is None else ref_tokens
        rec["aim_b_greedy_tokens_equal_first_variant"] = int((tokens == ref_tokens).sum())
        del greedy
        sampler = fast.GraphedRasterSampler(model, 16, cfg_scale=1.5)
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
        rec["us_per_layer"] = rec["step_ms"] * 1000 / L
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(3):
            sampler.generate(labels)
        torch.cuda.synchronize()
        rec["s_per_batch"] = (time.perf_counter() - t) / 3
        rec["images_per_s"] = 16 / rec["s_per_batch"]
        del sampler
    except Exception as e:   # noqa: BLE001 - a variant that fails is a result too
        rec["error"] = f"{type(e).__name__}: {str(e)[-800:]}"
    res["variants"].append(rec)
    print(json.dumps(rec))
json.dump(res, open(sys.argv[1], "w"), indent=1)
