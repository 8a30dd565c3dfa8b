"""The Mamba2 training scan alone, forward + backward, side by side: our Triton kernels against the
compiled tensor-core PyTorch scan (with its recomputation; the path before it), on the layers of AiM-L
(batch 64 x 256 tokens, and 4 x 4096) in bf16. GPU only. Usage: python bench/scan_speed.py OUT.json"""
import json
import sys

import torch

from mambagen.bench import timeit_calls
from mambagen.kernels.ssd_scan import ssd_chunked_triton
from mambagen.layers.ssd_fast import ssd_chunked_recomputed


def time_ms(fn, repeat=20):
    """Median milliseconds of one call, after two warm-up calls (the first compiles / autotunes)."""
    fn(), fn()
    times = sorted(timeit_calls(fn, repeat))
    return times[len(times) // 2] * 1e3


def scan_inputs(b, l, h=32, p=64, n=128, device="cuda", dtype=torch.bfloat16):
    """x, dt, A, B, C of one Mamba2 layer (default: AiM-L's, d_inner 2048 in 32 heads of 64, d_state 128, one
    group) for b x l tokens, with gradients; dt and A in float32 as the layer gives them."""
    torch.manual_seed(0)
    x = torch.randn(b, l, h, p, device=device, dtype=dtype, requires_grad=True)
    B, C = (torch.randn(b, l, 1, n, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, device=device) - 3).requires_grad_()
    A = (-torch.rand(h, device=device) * 15 - 1).requires_grad_()
    return x, dt, A, B, C


def main(out_path):
    scans = {"triton": ssd_chunked_triton, "torch_compiled_recomputed": ssd_chunked_recomputed}
    chunks = {"triton": (128, 256), "torch_compiled_recomputed": (128,)}   # 256 fails to compile in Inductor
    records = []
    for b, l in ((64, 256), (4, 4096)):
        x, dt, A, B, C = scan_inputs(b, l)
        for name, scan in scans.items():
            for chunk in chunks[name]:

                def fwd():
                    with torch.no_grad():
                        scan(x, dt, A, B, C, chunk)

                def fwd_bwd():
                    y, s = scan(x, dt, A, B, C, chunk)
                    torch.autograd.grad(y.sum() + s.sum(), (x, dt, A, B, C))

                try:
                    rec = {"scan": name, "batch": b, "tokens": l, "chunk": chunk,
                           "forward_ms": time_ms(fwd), "forward_backward_ms": time_ms(fwd_bwd)}
                    rec["aim_l_48_layers_ms"] = 48 * rec["forward_backward_ms"]
                except Exception as e:   # e.g. a compile failure at one chunk: recorded, the rest still run
                    rec = {"scan": name, "batch": b, "tokens": l, "chunk": chunk, "error": f"{type(e).__name__}: {e}"[:500]}
                print(json.dumps(rec), flush=True)
                records.append(rec)
                torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "command": "python bench/scan_speed.py " + out_path, "records": records}, open(out_path, "w"), indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
