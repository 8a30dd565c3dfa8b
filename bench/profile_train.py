"""Where the time of one training step goes, per kernel: the bench's training step (`mambagen.bench.training_step`:
forward, backward and AdamW, bf16 autocast, random weights), profiled for 2 steps after 3 warm-up steps. Usage:
    python bench/profile_train.py MODEL BATCH OUT.txt [compile] [torchscan|triton] [kernels] [chunkN]"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from mambagen.bench import training_step


def main(name, batch, out_path, *opts):
    scan = "fast" if "torchscan" in opts else "triton" if "triton" in opts else "auto"
    chunk = next((int(o[5:]) for o in opts if o.startswith("chunk")), 128)
    model, step, scan_fn = training_step(name, batch, "bf16", torch.device("cuda"), compile_model="compile" in opts,
                                         scan=scan, scan_chunk=chunk, kernels="kernels" in opts)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    head = (f"# {name} batch {batch} x {model.config.num_tokens}, options {list(opts)}, scan {scan_fn}, 2 steps, "
            f"{torch.cuda.get_device_name()}\n")
    open(out_path, "w").write(head + table)
    print(head + "\n".join(table.splitlines()[:25]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
