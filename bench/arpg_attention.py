"""ARPG-L decoding's attention backend, side by side (graphed whole call, batch 16, CFG, bf16):
PyTorch's default SDPA choice vs the memory-efficient kernel first, eager and compiled block steps.
Usage: python bench/arpg_attention.py OUT.json"""
import json
import sys
import time

import torch
import torch._dynamo
from torch.nn.attention import SDPBackend

import mambagen
from mambagen.sample.graphs import GraphedCallSampler, decode_attention_backends

model = mambagen.create_model("arpg-l").cuda().to(torch.bfloat16).eval()
labels = torch.arange(16, device="cuda")
default = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
res = []
for compiled in (False, True):
    for name, backends in (("default order (cuDNN first)", default), ("efficient first", decode_attention_backends()),
                           ("math only", [SDPBackend.MATH])):
        torch._dynamo.reset()          # the compiled code depends on the backend chosen while compiling
        t = time.perf_counter()
        s = GraphedCallSampler(model, 16, cfg_scale=1.5, num_iter=64, compile_blocks=compiled, attention_backends=backends)
        setup = time.perf_counter() - t
        s.generate(labels)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(3):
            s.generate(labels)
        torch.cuda.synchronize()
        spb = (time.perf_counter() - t) / 3
        res.append({"attention": name, "compiled_blocks": compiled, "seconds_per_batch": spb, "images_per_s": 16 / spb,
                    "setup_s": setup})
        print(json.dumps(res[-1]))
        del s
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": res}, open(sys.argv[1], "w"), indent=2)
