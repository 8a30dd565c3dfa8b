"""Where the time of one decode step goes (compiled, not graphed, so kernels are visible).
Usage: python bench/profile_step.py MODEL BATCH OUT.txt"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import mambagen
from mambagen.models.registry import family_of
from mambagen.sample.config import SamplingConfig
from mambagen.sample.fast import GraphedRasterSampler

name, batch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = mambagen.create_model(name).cuda().to(torch.bfloat16).eval()
sampler = GraphedRasterSampler(model, family_of(model).fast, batch, SamplingConfig(cfg_scale=1.5), graph=False)
labels = torch.arange(batch, device="cuda") % model.config.num_classes
with torch.no_grad():
    sampler.labels.copy_(torch.cat([labels, torch.full_like(labels, model.config.num_classes)]))
    sampler._start()
    for _ in range(5):
        sampler._step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(20):
            sampler.index.fill_(i)
            sampler._step()
        torch.cuda.synchronize()
table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
open(out, "w").write(table)
print(table)
