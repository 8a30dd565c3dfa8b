"""GPU-only checks of the fast paths against the reference (run on the device; results committed).

Greedy tokens must be identical and the logits close (fp32), for the CUDA-graphed raster sampler.
Usage: python bench/check_fast_gpu.py OUT.json
"""
import json
import sys
import time

import torch

import mambagen
from mambagen.models.registry import family_of
from mambagen.sample.config import SamplingConfig
from mambagen.sample.fast import GraphedRasterSampler
from mambagen.sample.raster import generate_raster


@torch.no_grad()
def check_ssm_kernel():
    """The fused Triton SSM step against the reference `ssd_step`, fresh random inputs per shape."""
    from mambagen.layers import kernels
    from mambagen.layers.ssd_ref import ssd_step
    out = []
    for b, h, p, n, g, dtype in ((32, 32, 64, 128, 1, torch.float32), (3, 6, 48, 16, 2, torch.float32),
                                 (5, 4, 16, 64, 4, torch.float32), (32, 32, 64, 128, 1, torch.bfloat16)):
        state = torch.randn(b, h, p, n, device="cuda").to(dtype)
        x, dt = torch.randn(b, h, p, device="cuda"), torch.rand(b, h, device="cuda")
        A, B, C = -torch.rand(h, device="cuda") * 4, torch.randn(b, g, n, device="cuda"), torch.randn(b, g, n, device="cuda")
        y_ref, s_ref = ssd_step(state.double(), x.double(), dt.double(), A.double(), B.double(), C.double())
        y = kernels.ssm_step_inplace(state, x, dt, A, B, C)
        out.append({"shape": [b, h, p, n, g], "state_dtype": str(dtype), "y_rel_err": ((y - y_ref).norm() / y_ref.norm()).item(),
                    "state_rel_err": ((state.double() - s_ref).norm() / s_ref.norm()).item()})
    return {"model": "ssm_step_inplace (Triton)", "checks": out}


@torch.no_grad()
def check_fused_step():
    """The fused Mamba2 decode kernel (conv + SSM + skip + gate) against the reference `Mamba2.step`:
    AiM-L's mixer (and a grouped one), 8 steps after a 5-token prefill; fp32 vs a float64 copy, bf16 vs fp32."""
    import copy
    from mambagen.layers.mamba2 import Mamba2
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    out = []
    for kw in (dict(d_model=1024), dict(d_model=512, ngroups=2, D_has_hdim=True)):
        torch.manual_seed(0)
        m = Mamba2(**kw).cuda()
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for dtype, ref_dtype in ((torch.float32, torch.float64), (torch.bfloat16, torch.float32)):
            fast, ref = copy.deepcopy(m).to(dtype), copy.deepcopy(m).to(ref_dtype)
            u = torch.randn(32, 13, kw["d_model"], device="cuda")
            cf, cr = fast.allocate_cache(32, paired_conv=True), ref.allocate_cache(32)
            fast(u[:, :5].to(dtype), cf), ref(u[:, :5].to(ref_dtype), cr)
            errs = []
            for t in range(8):
                a = ref.step(u[:, 5 + t].to(ref_dtype), cr)
                b = fast.step(u[:, 5 + t].to(dtype), cf, torch.tensor(t, device="cuda"))
                errs.append(rel(b, a))
            out.append({**kw, "dtype": str(dtype), "reference": str(ref_dtype), "max_step_out_rel_err": max(errs),
                        "state_rel_err": rel(cf.ssm, cr.ssm), "conv_rel_err": rel(cf.conv_pair[8 % 2], cr.conv)})
    return {"model": "mamba2_step_fused (Triton)", "checks": out}


def _aim_b_batch(chunk: int):
    """AiM-B in training mode with the Mamba2 scan in chunks of `chunk`, and a random batch of 8."""
    from mambagen.layers.mamba2 import set_scan_chunk
    model = mambagen.create_model("aim-b").cuda().train()
    set_scan_chunk(model, chunk)
    tokens = torch.randint(0, model.config.vocab_size, (8, model.config.num_tokens), device="cuda")
    labels = torch.randint(0, model.config.num_classes, (8,), device="cuda")
    return model, tokens, labels


def _train_grads(model, tokens, labels, compiled: bool = False):
    """(loss, every parameter's gradient flattened) of one training forward + backward under bf16 autocast."""
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = (torch.compile(model) if compiled else model)(tokens, labels)
    model.zero_grad()
    loss.backward()
    return loss.item(), torch.cat([q.grad.flatten().float() for q in model.parameters() if q.grad is not None])


def check_scan():
    """The compiled tensor-core chunked scan (training) against the reference: values, state and gradients,
    on an AiM-L-shaped layer, in float32 (vs float64) and with bf16 operands (vs float32); then one whole
    AiM-B training loss + gradients under bf16 autocast with each scan."""
    from mambagen.layers.mamba2 import set_scan_impl
    from mambagen.layers.ssd_fast import ssd_chunked_compiled
    from mambagen.layers.ssd_ref import ssd_chunked
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    torch.manual_seed(0)
    b, l, h, p, n = 8, 256, 32, 64, 128
    x, B, C = torch.randn(b, l, h, p, device="cuda"), torch.randn(b, l, 1, n, device="cuda"), torch.randn(b, l, 1, n, device="cuda")
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, device="cuda") - 3)
    A = -torch.rand(h, device="cuda") * 15 - 1
    out = []
    for dtype, ref_dtype in ((torch.float32, torch.float64), (torch.bfloat16, torch.float32)):
        ins = [t.to(dtype).requires_grad_() for t in (x, B, C)]
        y, s = ssd_chunked_compiled(ins[0], dt, A, ins[1], ins[2], 64)
        g = torch.autograd.grad(y.square().sum() + s.square().sum(), ins)
        ref_ins = [t.detach().to(ref_dtype).requires_grad_() for t in ins]
        y_r, s_r = ssd_chunked(ref_ins[0], dt.to(ref_dtype), A.to(ref_dtype), ref_ins[1], ref_ins[2], 64)
        g_r = torch.autograd.grad(y_r.square().sum() + s_r.square().sum(), ref_ins)
        out.append({"operands": str(dtype), "reference": str(ref_dtype), "y_rel_err": rel(y, y_r),
                    "state_rel_err": rel(s, s_r), "grad_rel_err": [rel(a, b) for a, b in zip(g, g_r)]})
    model, tokens, labels = _aim_b_batch(64)
    results = {}
    for impl in ("reference", "fast"):
        set_scan_impl(model, impl)
        results[impl] = _train_grads(model, tokens, labels)
    (loss_ref, grad_ref), (loss_fast, grad_fast) = results["reference"], results["fast"]
    out.append({"model": "aim-b train step, bf16 autocast", "loss_reference": loss_ref, "loss_fast": loss_fast,
                "grad_rel_err": rel(grad_fast, grad_ref)})
    # the whole model compiled (as `mambagen train --compile` and the bench run it: the conv as shifted sums)
    set_scan_impl(model, "auto")
    loss, grad = _train_grads(model, tokens, labels, compiled=True)
    out.append({"model": "aim-b train step, bf16 autocast, compiled model vs eager reference scan",
                "loss_reference": loss_ref, "loss_compiled": loss, "grad_rel_err": rel(grad, grad_ref)})
    return {"model": "ssd_chunked_compiled (training scan)", "checks": out}


def _emit(out: list, entry: dict) -> None:
    """Keep a check's result and print it at once: a call cut off by its time limit still shows what passed."""
    out.append(entry)
    print(json.dumps(entry), flush=True)


def check_triton_scan():
    """Our Triton SSD scan (training, long prefills) against the reference: values, final state and the
    gradients of every input on AiM-L-shaped layers (chunk 128 and 256, with an entering state), float32
    vs float64 and bf16 operands vs float32; then an AiM-B training step under bf16 autocast (eager and
    the whole model compiled) against the reference scan, and an AiM-B fp32 prefill of 200 tokens."""
    from mambagen.layers.mamba2 import set_scan_impl
    from mambagen.kernels.ssd_scan import ssd_chunked_triton
    from mambagen.layers.ssd_ref import ssd_chunked
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    torch.manual_seed(0)
    out = []
    for b, l, chunk in ((8, 256, 128), (8, 256, 256), (2, 1000, 128)):
        h, p, n = 32, 64, 128
        x, B, C = (torch.randn(b, l, h, p, device="cuda"), torch.randn(b, l, 1, n, device="cuda"),
                   torch.randn(b, l, 1, n, device="cuda"))
        dt = torch.nn.functional.softplus(torch.randn(b, l, h, device="cuda") - 3)
        A = -torch.rand(h, device="cuda") * 15 - 1
        s0 = torch.randn(b, h, p, n, device="cuda") * 0.1
        for dtype, ref_dtype in ((torch.float32, torch.float64), (torch.bfloat16, torch.float32)):
            ins = [x.to(dtype), dt, A, B.to(dtype), C.to(dtype), s0]
            ins = [t.clone().requires_grad_() for t in ins]
            y, s = ssd_chunked_triton(*ins[:5], chunk, initial_state=ins[5])
            g = torch.autograd.grad(y.square().sum() + s.square().sum(), ins)
            ref_ins = [t.detach().to(ref_dtype).requires_grad_() for t in ins]
            y_r, s_r = ssd_chunked(*ref_ins[:5], chunk, initial_state=ref_ins[5])
            g_r = torch.autograd.grad(y_r.square().sum() + s_r.square().sum(), ref_ins)
            _emit(out, {"shape": [b, l, h, p, n], "chunk": chunk, "operands": str(dtype), "reference": str(ref_dtype),
                        "y_rel_err": rel(y, y_r), "state_rel_err": rel(s, s_r),
                        "grad_rel_err": dict(zip("x dt A B C s0".split(), (rel(a, c) for a, c in zip(g, g_r))))})
    model, tokens, labels = _aim_b_batch(128)
    results = {}
    for impl, compiled in (("reference", False), ("triton", False), ("auto", True)):
        set_scan_impl(model, impl)
        results[impl] = _train_grads(model, tokens, labels, compiled)
    for impl in ("triton", "auto"):
        _emit(out, {"model": "aim-b train step, bf16 autocast" + (", compiled model" if impl == "auto" else ""),
                    "scan": "triton", "loss_reference": results["reference"][0], "loss": results[impl][0],
                    "grad_rel_err": rel(results[impl][1], results["reference"][1])})
    model.eval()
    with torch.no_grad():   # the prefill of a long prefix (an edit keeping 200 tokens): auto -> Triton
        for q in model.parameters():   # adaLN-zero init would make every block an identity: perturb
            q.add_(torch.randn_like(q) * 0.02)
        logits, states = [], []
        for impl in ("reference", "auto"):
            set_scan_impl(model, impl)
            cache = model.allocate_cache(8)
            lg = model.prefill(labels, cache, tokens[:, :200])
            logits.append(torch.stack([lg] + [model.step(tokens[:, 200 + i], cache, 200 + i) for i in range(8)], 1))
            states.append(cache.layers[-1].ssm.clone())
    _emit(out, {"model": "aim-b prefill of 200 tokens then 8 steps, fp32", "logits_rel_err": rel(logits[1], logits[0]),
                "last_layer_state_rel_err": rel(states[1], states[0]),
                "argmax_equal": int((logits[1].argmax(-1) == logits[0].argmax(-1)).sum()), "argmax_total": 8 * 9})
    return {"model": "ssd_chunked_triton (our Triton training scan)", "checks": out}


def check_training_kernels():
    """The eager CUDA training path of Mamba2 (Triton conv+SiLU, scan and gated norm) against the all-PyTorch
    mixer: AiM-L's mixer at batch 8 x 256, forward output and every parameter's gradient, fp32 vs a float64
    copy and under bf16 autocast vs fp32; then an AiM-B training step (loss, gradients) under bf16 autocast."""
    import copy
    from mambagen.layers.mamba2 import Mamba2, set_kernels, set_scan_impl
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    torch.manual_seed(0)
    m = Mamba2(d_model=1024, chunk_size=128).cuda()
    with torch.no_grad():
        for q in m.parameters():
            q.add_(torch.randn_like(q) * 0.02)
    u = torch.randn(8, 256, 1024, device="cuda")
    out = []
    for autocast, ref_dtype in ((False, torch.float64), (True, torch.float32)):
        results = []
        for fast in (True, False):
            mm = copy.deepcopy(m).to(torch.float32 if fast else ref_dtype)
            set_kernels(mm, fast)
            set_scan_impl(mm, "triton" if fast else "reference")
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and fast):
                y = mm(u.to(torch.float32 if fast else ref_dtype))
            y.float().square().mean().backward()
            results.append((y, {n: q.grad for n, q in mm.named_parameters()}))
        (y, g), (y_r, g_r) = results
        out.append({"mixer": "aim-l mixer, batch 8 x 256", "fast": "bf16 autocast" if autocast else "float32",
                    "reference": str(ref_dtype), "out_rel_err": rel(y, y_r),
                    "grad_rel_err": {n: rel(g[n], g_r[n]) for n in g}})
    model, tokens, labels = _aim_b_batch(128)
    results = []
    for fast in (False, True):
        set_kernels(model, fast)
        set_scan_impl(model, "triton" if fast else "reference")
        results.append(_train_grads(model, tokens, labels))
    out.append({"model": "aim-b train step, bf16 autocast, eager: Triton conv, scan and norm vs PyTorch",
                "loss_reference": results[0][0], "loss": results[1][0], "grad_rel_err": rel(results[1][1], results[0][1])})
    return {"model": "Mamba2 training kernels (conv_silu, ssd_scan, gated_norm)", "checks": out}


@torch.no_grad()
def check_whole_graph(name, batch=4):
    """VAR / M-VAR / ARPG, greedy: the eager call captured as one CUDA graph (nothing compiled), and the
    compiled + graphed sampler (the family's fast path), each == the eager call. ARPG's order is drawn
    from the default CUDA generator, seeded alike for all three."""
    from mambagen.bench import generation_setting
    from mambagen.sample.pipeline import Sampler
    torch.manual_seed(0)
    model = mambagen.create_model(name).cuda().eval()
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)
    labels = torch.arange(batch, device="cuda") % model.config.num_classes
    sampling, tokenizer = generation_setting(model, 2.5)
    sampling = sampling.replace(top_k=1)
    eager, graphed, fast = (Sampler(model, tokenizer, sampling, fast=f, compile=c)
                            for f, c in ((False, False), (True, False), (True, True)))
    eager.tokens(labels)
    torch.cuda.manual_seed(7)
    t = time.time()
    ref = eager.tokens(labels)
    torch.cuda.synchronize()
    t_ref = time.time() - t
    graphed.tokens(labels), fast.tokens(labels)     # build (warm-up and capture draw too), then seed
    torch.cuda.manual_seed(7)           # the graphs draw from the default CUDA generator, as the eager call did
    out = graphed.tokens(labels)
    torch.cuda.manual_seed(7)
    t = time.time()
    got = fast.tokens(labels)
    torch.cuda.synchronize()
    t_fast = time.time() - t
    return {"model": name, "batch": batch, "tokens_total": ref.numel(),
            "whole_call_graph_tokens_equal": int((out == ref).sum()),
            "compiled_graphed_sampler_tokens_equal": int((got == ref).sum()),
            "eager_s": t_ref, "compiled_graphed_s": t_fast}


@torch.no_grad()
def check(name, batch=4, **overrides):
    torch.manual_seed(0)
    model = mambagen.create_model(name, **overrides).cuda().eval()
    if name.startswith("gpt"):
        with torch.no_grad():   # the official zero-initialised head would make every logit equal
            model.output.weight.normal_(std=0.02)
    with torch.no_grad():  # adaLN-zero init would make every block an identity: perturb
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    labels = torch.arange(batch, device="cuda") % model.config.num_classes
    t = time.time()
    sampling = SamplingConfig(cfg_scale=2.0, top_k=1)
    ref = generate_raster(model, labels, sampling, return_logits=True)
    t_ref = time.time() - t
    sampler = GraphedRasterSampler(model, family_of(model).fast, batch, sampling)
    fast = sampler.generate(labels)
    t = time.time()
    fast = sampler.generate(labels)
    torch.cuda.synchronize()
    t_fast = time.time() - t
    same = int((fast == ref.tokens).sum())
    # logits of the fast path: teacher-force the reference tokens through the family's fast decode step
    decode = family_of(model).fast(model, batch)                   # its own cache, the conditional rows only
    lg = [decode.start(labels)]
    for i in range(model.config.num_tokens - 1):
        lg.append(decode.step(ref.tokens[:, i], torch.tensor(i, device="cuda")))
    lg = torch.stack(lg, 1)
    ref_lg, _ = model(ref.tokens, labels)
    rel = ((lg - ref_lg).norm() / ref_lg.norm()).item()
    fused = getattr(decode, "fused", False)                        # AiM's fused Mamba2 kernels, where they ran
    return {"model": name, "batch": batch, "fused_mamba2_step": fused, "tokens_equal": same, "tokens_total": fast.numel(),
            "compiled_step_vs_parallel_forward_rel_err": rel, "reference_s": t_ref, "fast_s": t_fast}


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import subprocess
    if len(sys.argv) > 2 and sys.argv[2] == "--one":   # one model per process: a failed capture stays there
        special = {"ssm-kernel": check_ssm_kernel, "scan": check_scan, "fused-step": check_fused_step,
                   "triton-scan": check_triton_scan, "training-kernels": check_training_kernels}
        if sys.argv[3] in special:
            json.dump(special[sys.argv[3]](), open(sys.argv[1], "w"))
            sys.exit(0)
        fn = check if sys.argv[3].split("-")[0] in ("aim", "gpt") else check_whole_graph
        json.dump(fn(sys.argv[3], batch=int(sys.argv[4])), open(sys.argv[1], "w"))
        sys.exit(0)
    results = []
    for name in sys.argv[2:] or ["aim-b", "gpt-b"]:
        batch = 4
        r = subprocess.run([sys.executable, __file__, "/tmp/one.json", "--one", name, str(batch)],
                           stderr=subprocess.PIPE, text=True)   # stdout passes through: partial results
        results.append(json.load(open("/tmp/one.json")) if r.returncode == 0 else
                       {"model": name, "error": r.stderr[-2000:]})
        print(json.dumps(results[-1]), flush=True)
        json.dump(results, open(sys.argv[1], "w"), indent=2)   # after each model: a cut-off call keeps the rest
