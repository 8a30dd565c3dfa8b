"""Registers, spills and shared memory of our Triton SSD scan kernels, compiled offline for one GPU
architecture (default sm_90a, the H100/H200): no GPU needed, only the Triton wheel and its ptxas.

    python bench/kernel_registers.py bench/results/offline_sm90_scan_registers   # writes .json and .md
    python bench/kernel_registers.py OUT --only _y_kernel                       # one kernel

Every kernel is compiled at AiM-L's layer in bf16 training (32 heads x 64, one group, d_state 128, chunk 128)
for each setting the autotuner can pick. A thread past 255 registers spills to local memory, and the
registers bound how many programs an SM holds at once (65,536 registers per SM): both are there before a
single timing, and show which settings the tuner should not even try."""
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)   # compile for the GPU, not for the interpreter
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mambagen.kernels import ssd_scan  # noqa: E402

REGS_PER_SM, SMEM_PER_SM, WARPS_PER_SM = 65536, 228 * 1024, 64
SHAPE = dict(H=32, G=1, P=64, N=128, Q=128, MM=1, BLOCK_P=64, BLOCK_N=128)   # AiM-L, bf16 operands
F32, BF16 = "*fp32", "*bf16"
# kernel -> (launch name, its pointer dtypes in bf16 training, the constexprs beyond SHAPE, untuned warps)
KERNELS = [
    ("_chunk_state_kernel", "chunk states (forward)", dict(u_ptr=BF16, dt_ptr=F32, acum_ptr=F32, v_ptr=BF16, out_ptr=F32),
     dict(FORWARD=True, BLOCK_L=64)),
    ("_carry_kernel", "carry", dict(own_ptr=F32, acum_ptr=F32, init_ptr=F32, states_ptr=BF16, final_ptr=F32),
     dict(PN=64 * 128, HAS_INIT=False, BLOCK=1024)),
    ("_y_kernel", "y", dict(x_ptr=BF16, dt_ptr=F32, acum_ptr=F32, cb_ptr=F32, C_ptr=BF16, states_ptr=BF16, y_ptr=F32), {}),
    ("_chunk_state_kernel", "gradient sent into each chunk",
     dict(u_ptr=F32, dt_ptr=F32, acum_ptr=F32, v_ptr=BF16, out_ptr=F32), dict(FORWARD=False, BLOCK_L=64)),
    ("_carry_bwd_kernel", "carry backward", dict(sent_ptr=F32, acum_ptr=F32, states_ptr=BF16, dfinal_ptr=F32,
                                                 dout_ptr=BF16, dend_ptr=F32, dinit_ptr=F32),
     dict(PN=64 * 128, HAS_DFINAL=False, BLOCK=1024)),
    ("_bwd_dx_db_kernel", "dx / dB", dict(x_ptr=BF16, dt_ptr=F32, acum_ptr=F32, B_ptr=BF16, C_ptr=BF16, cb_ptr=F32,
                                          dy_ptr=F32, dout_ptr=BF16, dx_ptr=BF16, ddt_ptr=F32, dB_ptr=F32, rowB_ptr=F32),
     dict(HEADS=4)),
    ("_bwd_dc_kernel", "dC", dict(x_ptr=BF16, dt_ptr=F32, acum_ptr=F32, B_ptr=BF16, C_ptr=BF16, dy_ptr=F32,
                                  states_ptr=BF16, dC_ptr=F32, rowC_ptr=F32), dict(HEADS=4)),
]


def _ptxas() -> str:
    """The newest ptxas the wheel ships (Triton emits PTX for its newest one)."""
    d = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise SystemExit(f"no ptxas in {d}: this needs the Triton wheel for NVIDIA GPUs")


def compile_report(jit, pointers: dict, constexprs: dict, warps: int, stages: int, arch: int) -> dict:
    """Compile one kernel setting to PTX and ask ptxas for its resources."""
    names = jit.arg_names
    signature = {p.name: "constexpr" if p.is_constexpr else pointers.get(p.name, "i32") for p in jit.params}
    missing = [p.name for p in jit.params if p.is_constexpr and p.name not in constexprs]
    if missing:
        raise ValueError(f"{jit.__name__}: no value for constexpr {', '.join(missing)}")
    src = ASTSource(jit, signature=signature,
                    constexprs={(names.index(n),): v for n, v in constexprs.items() if n in names})
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        info = subprocess.run([_ptxas(), "-v", "--gpu-name", f"sm_{arch}a", ptx, "-o", os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True).stderr
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
    shared = compiled.metadata.shared
    by_regs = REGS_PER_SM // (((regs + 7) // 8 * 8) * 32 * warps)
    by_smem = SMEM_PER_SM // shared if shared else by_regs
    programs = min(by_regs, by_smem, WARPS_PER_SM // warps)
    return {"warps": warps, "stages": stages, "registers": regs, "spill_stores": int(spill.group(1)) if spill else 0,
            "spill_loads": int(spill.group(2)) if spill else 0, "shared_bytes": shared,
            "programs_per_sm": programs, "warps_per_sm": programs * warps}


def report(arch: int = 90, only: str | None = None, heads: int | None = None) -> list[dict]:
    """Every tuned setting of every kernel; `heads`: the heads one backward program visits (HEADS), instead of
    AiM-L's 4 (32 heads over ssd_scan.MAX_PARTIALS = 8 programs; 1 is one head per program)."""
    rows = []
    for name, what, pointers, extra in KERNELS:
        if only and name != only:
            continue
        if heads is not None and "HEADS" in extra:
            extra = {**extra, "HEADS": heads}
        kernel = getattr(ssd_scan, name)
        tuned = not isinstance(kernel, triton.runtime.jit.JITFunction)
        jit = kernel.fn if tuned else kernel
        if not hasattr(jit, "params"):
            raise SystemExit("the kernels were built for Triton's interpreter: run this without TRITON_INTERPRET")
        settings = ([(dict(c.kwargs), c.num_warps, c.num_stages) for c in kernel.configs] if tuned else [({}, 4, 3)])
        for meta, warps, stages in settings:
            r = compile_report(jit, pointers, {**SHAPE, **extra, **meta}, warps, stages, arch)
            rows.append({"kernel": name, "part": what, **meta, **({"HEADS": extra["HEADS"]} if "HEADS" in extra else {}), **r})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], arch: int) -> str:
    lines = [f"# Our SSD scan kernels' resources, compiled offline for sm_{arch}a", "",
             f"`python bench/kernel_registers.py` (Triton {triton.__version__}); AiM-L's layer in bf16 training: "
             "32 heads x 64, d_state 128, chunk 128.", "",
             "| kernel | part | heads per program | rows | warps | registers | spill stores / loads (B per thread) | shared KiB | programs (warps) per SM |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['kernel']}` | {r['part']} | {r.get('HEADS', '-')} | {r.get('BLOCK', '-')} | {r['warps']} | {r['registers']} | "
                     f"{r['spill_stores']} / {r['spill_loads']} | {r['shared_bytes'] / 1024:.0f} | "
                     f"{r['programs_per_sm']} ({r['warps_per_sm']} of {WARPS_PER_SM}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="bench/results/offline_sm90_scan_registers", help="path without extension")
    ap.add_argument("--only", default=None, help="one kernel, e.g. _bwd_dx_db_kernel")
    ap.add_argument("--heads", type=int, default=None, help="heads per backward program (default: AiM-L's 4)")
    a = ap.parse_args()
    out, rows = a.out, report(only=a.only, heads=a.heads)
    if not rows:
        raise SystemExit(f"no kernel named {a.only}: one of {', '.join(sorted({k[0] for k in KERNELS}))}")
    meta = {"arch": "sm_90a", "triton": triton.__version__, "command": "python " + " ".join(sys.argv), "shape": SHAPE}
    for path, text in ((out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=1)), (out + ".md", markdown(rows, 90))):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(f"wrote {out}.json and {out}.md")
