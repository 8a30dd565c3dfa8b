"""Where the time of one whole sampling call goes, per kernel (next-scale and random-order models).
Eager (not graphed) so every kernel is visible; batch B with CFG, bf16, random weights.
Usage: python bench/profile_call.py MODEL BATCH OUT.txt"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import mambagen
from mambagen.bench import generation_call

name, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = mambagen.create_model(name).cuda().to(torch.bfloat16).eval()
labels = torch.arange(batch, device="cuda") % model.config.num_classes
call = generation_call(model, cfg_scale=1.5)
with torch.no_grad():
    call(labels, None)
    torch.cuda.synchronize()
    t = time.perf_counter()
    call(labels, None)
    torch.cuda.synchronize()
    eager = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call(labels, None)
        torch.cuda.synchronize()
events = prof.key_averages()
gpu_total = sum(e.self_device_time_total for e in events) / 1e3
table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)
text = f"{name} batch {batch}: eager call {eager * 1e3:.1f} ms, GPU kernel time {gpu_total:.1f} ms, " \
       f"kernels {sum(e.count for e in events if e.self_device_time_total > 0)}\n{table}"
open(out, "w").write(text)
print(text[:3000])
