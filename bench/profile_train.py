"""Where the time of one training step goes, per kernel: the bench's training step (`mambagen.bench.training_step`:
forward, backward and AdamW, bf16 autocast, random weights), profiled for 2 steps after 3 warm-up steps.
Writes the profiler's table to OUT.txt and, beside it, OUT.json: the GPU time per step by kind of kernel (our
scan, our other kernels, matmuls, layout copies, the compiler's fused kernels, the optimizer, the rest) with the
largest kernels of each, and the largest copies with their shapes and the lines that made them. Usage:
    python bench/profile_train.py MODEL BATCH OUT.txt [compile] [torchscan|triton] [kernels] [chunkN]"""
import json
import re
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mambagen.bench import training_step


KINDS = (   # (kind, pattern on the kernel's name), first match wins
    ("scan (ours)", r"^_(chunk_state|carry|carry_bwd|y|bwd_dx_db|bwd_dc)_kernel"),
    ("other Triton kernels (ours)", r"^_\w+_kernel"),
    ("matmuls", r"gemm|nvjet|cutlass|xmma|cublas|wgmma"),
    ("compiler's fused kernels", r"^triton_"),
    ("layout copies", r"copy|Copy|Memcpy|Memset"),
    ("optimizer", r"multi_tensor|adam|Adam"),
)


def kind_of(kernel: str) -> str:
    return next((kind for kind, pattern in KINDS if re.search(pattern, kernel)), "other")


def by_kind(events, steps: int, skip: frozenset = frozenset()) -> dict:
    """GPU milliseconds per step of each kind of kernel, and each kind's five largest kernels. `skip`: names of
    annotations (a compiled graph's "## Call CompiledFxGraph ##", "Optimizer.step#..."), whose GPU ranges
    span kernels already counted."""
    kinds: dict = {}
    for e in events:
        if "CUDA" not in str(e.device_type) or e.self_device_time_total <= 0 or e.key in skip:
            continue                                  # CPU-side ops: their kernels are counted as kernels
        k = kinds.setdefault(kind_of(e.key), {"ms": 0.0, "kernels": {}})
        k["ms"] += e.self_device_time_total / 1e3 / steps
        k["kernels"][e.key[:120]] = k["kernels"].get(e.key[:120], 0.0) + e.self_device_time_total / 1e3 / steps
    for k in kinds.values():
        k["kernels"] = dict(sorted(k["kernels"].items(), key=lambda kv: -kv[1])[:5])
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["ms"]))


def copies(prof, steps: int, top: int = 10) -> list[dict]:
    """The largest aten::copy_ calls (casts and layout copies outside the compiled kernels) by input shapes and the
    Python lines that made them: ms per step, calls per step, shapes, the innermost frames of this package."""
    rows = []
    for e in prof.key_averages(group_by_input_shape=True, group_by_stack_n=8):
        if e.key != "aten::copy_" or e.device_time_total <= 0:
            continue
        frames = [f for f in (e.stack or []) if "mambagen" in f or "bench/" in f][:4] or (e.stack or [])[:4]
        rows.append({"ms": e.device_time_total / 1e3 / steps, "calls": e.count / steps,
                     "shapes": [list(s) for s in (e.input_shapes or []) if s], "where": frames})
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def main(name, batch, out_path, *opts):
    scan = "fast" if "torchscan" in opts else "triton" if "triton" in opts else "auto"
    chunk = next((int(o[5:]) for o in opts if o.startswith("chunk")), 128)
    model, step, scan_fn = training_step(name, batch, "bf16", torch.device("cuda"), compile_model="compile" in opts,
                                         scan=scan, scan_chunk=chunk, kernels="kernels" in opts)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t) / 3 * 1e3   # unprofiled: the GPU's idle time is wall - kernels
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], record_shapes=True, with_stack=True,
                 experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True)) as prof:   # stacks kept
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    head = (f"# {name} batch {batch} x {model.config.num_tokens}, options {list(opts)}, scan {scan_fn}, 2 steps, "
            f"{torch.cuda.get_device_name()}\n")
    open(out_path, "w").write(head + table)
    annotations = frozenset(e.name for e in prof.events() if getattr(e, "is_user_annotation", False))
    kinds = by_kind(prof.key_averages(), steps=2, skip=annotations)
    kernel_ms = sum(k["ms"] for k in kinds.values())
    json.dump({"model": name, "batch": batch, "options": list(opts), "scan": scan_fn, "device": torch.cuda.get_device_name(),
               "wall_ms_per_step": wall_ms, "gpu_ms_per_step": kernel_ms, "by_kind": kinds,
               "copies": copies(prof, steps=2)},
              open(re.sub(r"\.txt$", "", out_path) + ".json", "w"), indent=1)
    print(head + f"wall {wall_ms:.1f} ms/step, kernels {kernel_ms:.1f} ms/step\n" +
          "\n".join(f"{kind}: {k['ms']:.1f} ms/step" for kind, k in kinds.items()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
