"""Where the time of one AiM/M-VAR training step goes, per kernel: forward, backward and AdamW at the bench's
setting (bf16 autocast, random weights). Usage:
    python bench/profile_train.py MODEL BATCH OUT.txt [compile] [torchscan|triton] [kernels] [chunkN]"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import mambagen
from mambagen.layers.mamba2 import set_kernels, set_scan_chunk, set_scan_impl
from mambagen.models.registry import family_of
from mambagen.train.optim import make_optimizer


def main(name, batch, out_path, *opts):
    torch.manual_seed(0)
    model = mambagen.create_model(name).cuda().train()
    set_scan_chunk(model, next((int(o[5:]) for o in opts if o.startswith("chunk")), 128))
    set_scan_impl(model, "fast" if "torchscan" in opts else "triton" if "triton" in opts else "auto")
    set_kernels(model, "kernels" in opts)
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.num_tokens), device="cuda")
    labels = torch.randint(0, cfg.num_classes, (batch,), device="cuda")
    inputs = family_of(model).train_inputs(model, tokens, labels, None, None)
    opt = make_optimizer(model, 1e-4)
    fwd = torch.compile(model) if "compile" in opts else model

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = fwd(*inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    head = f"# {name} batch {batch} x {cfg.num_tokens}, options {list(opts)}, 2 steps, {torch.cuda.get_device_name()}\n"
    open(out_path, "w").write(head + table)
    print(head + "\n".join(table.splitlines()[:25]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
