"""M-VAR-d16 sampling (graphed whole call, batch 16, CFG, bf16) with each Mamba2 scan for its scales:
the reference scan, the tensor-core formulation eager in chunks of 32 / 64 / 128, and compiled (chunk 64).
Usage: python bench/mvar_scan.py OUT.json"""
import json
import sys
import time

import torch

import mambagen
from mambagen.bench import generation_setting
from mambagen.layers import mamba2
from mambagen.layers.ssd_fast import ssd_chunked_compiled
from mambagen.sample.graphs import GraphedCallSampler

model = mambagen.create_model("mvar-d16").cuda().to(torch.bfloat16).eval()
labels = torch.arange(16, device="cuda")
setting = generation_setting(model, 1.5)
variants = [("reference scan", "reference", None, False)] + \
           [(f"tensor-core scan, eager, chunk {c}", "fast", c, False) for c in (32, 64, 128)] + \
           [("tensor-core scan, compiled, chunk 64", "fast", 64, True)]
res = []
for name, impl, chunk, compiled in variants:
    original = mamba2.ssd_chunked_fast
    if compiled:
        mamba2.ssd_chunked_fast = ssd_chunked_compiled
    real_ctx = mamba2.scan_impl
    try:
        # the sampler opts into ("fast", 64); substitute this variant's setting
        import mambagen.sample.graphs as graphs
        graphs.scan_impl = lambda m, i, chunk=None: real_ctx(m, impl, chunk=variant_chunk)
        variant_chunk = chunk
        t = time.perf_counter()
        s = GraphedCallSampler(model, 16, **setting)
        setup = time.perf_counter() - t
        s.generate(labels)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(3):
            s.generate(labels)
        torch.cuda.synchronize()
        spb = (time.perf_counter() - t) / 3
        res.append({"scan": name, "seconds_per_batch": spb, "images_per_s": 16 / spb, "setup_s": setup})
        del s
    except Exception as e:   # noqa: BLE001 - one variant's failure is a result too
        res.append({"scan": name, "error": f"{type(e).__name__}: {str(e)[-600:]}"})
    finally:
        mamba2.ssd_chunked_fast = original
        graphs.scan_impl = real_ctx
    print(json.dumps(res[-1])[:700])
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": res}, open(sys.argv[1], "w"), indent=2)
