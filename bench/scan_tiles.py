"""Each tile setting of our Triton scan's backward kernels, timed side by side in one process: the dx/dB
and dC kernels forced to one (rows, warps) at a time, then the tuner's own pick, at AiM-L's layer (bf16,
chunk 128; 64 x 256 and 4 x 4096 tokens), with a group's 32 heads over ssd_scan.MAX_PARTIALS = 8 programs
(4 heads each, as shipped) and over 32 (one head each: fewer live registers, offline, but 4x the dB/dC
partials to write and sum). Forward + backward of the scan, the median of 20 calls.
bench/kernel_registers.py (--heads 1 for one head per program) says which settings spill; this says which
are fast.

    python bench/scan_tiles.py OUT            # GPU: OUT.json and OUT.md
    TRITON_INTERPRET=1 python bench/scan_tiles.py OUT --tiny   # a CPU dry run at a toy shape
"""
import json
import sys

import torch
import triton

from mambagen.io import atomic_path, write_json
from mambagen.kernels import ssd_scan
from scan_speed import scan_inputs, time_ms   # bench/: the inputs and the median timing of the scan alone

BACKWARD = (ssd_scan._bwd_dx_db_kernel, ssd_scan._bwd_dc_kernel)


def force(configs):
    """Give both backward kernels these configs (one: no tuning) and forget what they tuned before."""
    for kernel in BACKWARD:
        kernel.configs, kernel.cache = configs, {}


def main(out, tiny=False):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    h, p, n, chunk = (32, 64, 128, 128) if not tiny else (2, 16, 16, 32)
    shapes = ((64, 256), (4, 4096)) if not tiny else ((1, 64),)
    repeat = 20 if not tiny else 1
    meta = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (interpreter)", "torch": torch.__version__,
            "triton": triton.__version__, "command": " ".join(["python bench/scan_tiles.py", *sys.argv[1:]])}
    tuned = list(BACKWARD[0].configs)
    settings = [([c], f"{c.kwargs['BLOCK']} rows, {c.num_warps} warps") for c in tuned] + [(tuned, "the tuner's pick")]
    records, shipped_partials = [], ssd_scan.MAX_PARTIALS
    for (b, length), partials in [(shape, k) for shape in shapes for k in (8, 32)]:
        ssd_scan.MAX_PARTIALS = partials
        x, dt, A, B, C = scan_inputs(b, length, h, p, n, device=dev, dtype=dtype)

        def fwd_bwd():
            y, s = ssd_scan.ssd_chunked_triton(x, dt, A, B, C, chunk)
            torch.autograd.grad(y.sum() + s.sum(), (x, dt, A, B, C))

        for configs, label in settings:
            force(configs)
            rec = {"setting": label, "batch": b, "tokens": length, "chunk": chunk, "max_partials": partials,
                   "heads_per_program": ssd_scan._heads_per_program(h)}
            try:
                rec["forward_backward_ms"] = time_ms(fwd_bwd, repeat)   # after 2 calls that compile / tune
                rec["picked"] = [f"{k.best_config.kwargs['BLOCK']} rows, {k.best_config.num_warps} warps"
                                 for k in BACKWARD] if len(configs) > 1 else None
            except Exception as e:   # a setting that does not compile or fit: recorded, the rest still run
                rec["error"] = f"{type(e).__name__}: {e}"[:300]
            print(json.dumps(rec), flush=True)
            records.append(rec)
            write_json(out + ".json", {"meta": meta, "records": records})   # what is done survives a time limit
    force(tuned)
    ssd_scan.MAX_PARTIALS = shipped_partials
    write_json(out + ".json", {"meta": meta, "records": records})
    lines = [f"# The scan's backward tiles: {meta['device']}", "", f"`{meta['command']}` (torch {meta['torch']}, "
             f"Triton {meta['triton']}); AiM-L's layer, chunk {chunk}, forward + backward, median of {repeat}.", "",
             "| tokens | heads per program | backward kernels' setting | ms | tuner's pick (dx/dB, dC) |",
             "|---|---|---|---|---|"]
    for r in records:
        ms = f"{r['forward_backward_ms']:.3f}" if "forward_backward_ms" in r else r["error"]
        lines.append(f"| {r['batch']} x {r['tokens']} | {r['heads_per_program']} | {r['setting']} | {ms} | "
                     f"{'; '.join(r.get('picked') or []) or '-'} |")
    with atomic_path(out + ".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], tiny="--tiny" in sys.argv)
