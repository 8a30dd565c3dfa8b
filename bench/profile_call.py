"""Where the time of one whole sampling call goes, per kernel (next-scale and random-order models).
Not graphed, so every kernel is visible; batch B with CFG, bf16, random weights.
`fast`: with what the fast path compiles (ARPG's block steps, M-VAR's large-scale blocks and scan) and its
attention backends.
Usage: python bench/profile_call.py MODEL BATCH OUT.txt [fast]"""
import contextlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import mambagen
from mambagen.bench import generation_setting
from mambagen.models.registry import family_of
from mambagen.sample.graphs import NoFastSetting, decode_attention_backends

name, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fast = len(sys.argv) > 4 and sys.argv[4] == "fast"
torch.manual_seed(0)
model = mambagen.create_model(name).cuda().to(torch.bfloat16).eval()
labels = torch.arange(batch, device="cuda") % model.config.num_classes
sampling, tokenizer = generation_setting(model, 1.5)
family = family_of(model)
parts = family.fast(model, compile_blocks=True) if fast and family.fast is not None else NoFastSetting()
# the family's reference call with its fast parts in (what its graphed sampler captures, not graphed here)
call = lambda: family.sampler._call(*((tokenizer.quantize,) if family.tokenizer == "msvq" else ()), sampling)(
    model, labels, None, parts.block_steps)
ctx = parts.setting()
attn = torch.nn.attention.sdpa_kernel(decode_attention_backends()) if fast else contextlib.nullcontext()
with torch.no_grad(), ctx, attn:
    call()
    torch.cuda.synchronize()
    t = time.perf_counter()
    call()
    torch.cuda.synchronize()
    eager = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
events = prof.key_averages()
gpu_total = sum(e.self_device_time_total for e in events) / 1e3
table = events.table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)
text = f"{name} batch {batch} ({'fast: compiled parts' if fast else 'eager'}): call {eager * 1e3:.1f} ms, " \
       f"GPU kernel time {gpu_total:.1f} ms, kernels {sum(e.count for e in events if e.self_device_time_total > 0)}\n{table}"
open(out, "w").write(text)
print(text.splitlines()[0])
