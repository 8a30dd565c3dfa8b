"""The tensor-core arrangement of the chunked scan equals the reference: values, final state, gradients."""
import pytest
import torch

from mambagen.layers.mamba2 import Mamba2, set_scan_impl
from mambagen.layers.ssd_fast import ssd_chunked_fast
from mambagen.layers.ssd_ref import ssd_chunked, ssd_sequential

from test_mamba2 import _inputs


@pytest.mark.parametrize("chunk,with_state", [(1, True), (4, False), (7, True), (19, True), (64, False)])
def test_fast_scan_equals_recurrence(chunk, with_state):
    x, dt, A, B, C, s0 = _inputs()
    s0 = s0 if with_state else None
    y_ref, s_ref = ssd_sequential(x, dt, A, B, C, initial_state=s0)
    y, s = ssd_chunked_fast(x, dt, A, B, C, chunk, initial_state=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_fast_scan_gradients_equal_reference():
    inputs = [t.requires_grad_() for t in _inputs(l=21)]
    grads = []
    for scan in (ssd_chunked, ssd_chunked_fast):
        y, s = scan(*inputs[:5], 8, initial_state=inputs[5])
        g = torch.autograd.grad((y.sin().sum() + s.cos().sum()), inputs)
        grads.append(g)
    for g_ref, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9)


def test_fast_scan_in_bf16_stays_close_to_float32_reference():
    """bf16 operands with float32 decays/carry: error at bf16 rounding, not growing with the chunks."""
    x, dt, A, B, C, _ = _inputs(b=2, l=96, h=4, p=16, g=1, n=32, dtype=torch.float32)
    y_ref, s_ref = ssd_chunked(x, dt * 0.1, A, B, C, 16)
    y, s = ssd_chunked_fast(x.bfloat16(), dt * 0.1, A, B.bfloat16(), C.bfloat16(), 16)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert rel(y, y_ref) < 2e-2 and rel(s, s_ref) < 2e-2


def test_mixer_scan_impls_agree_forward_and_backward():
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=8).double()
    u = torch.randn(2, 13, 16, dtype=torch.float64)
    outs = []
    for impl in ("reference", "fast"):
        set_scan_impl(m, impl)
        m.zero_grad()
        out = m(u)
        out.square().sum().backward()
        outs.append((out, [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="scan implementation"):
        set_scan_impl(m, "cuda")


def test_inference_scan_choice_and_continuation_from_a_cache():
    """scan_impl(model, "fast", chunk) without a backward pass: the tensor-core scan, eager, continuing
    from the cache's state (M-VAR's scales); equal to the reference mixer; settings restored after."""
    from mambagen.layers import mamba2
    from mambagen.layers.ssd_fast import ssd_chunked_compiled, ssd_chunked_fast
    from mambagen.layers.ssd_ref import ssd_chunked
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=32).double()
    first, second = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 37, 16, dtype=torch.float64)
    outs, states = [], []
    for impl in ("reference", "fast"):
        cache = m.allocate_cache(2)
        with torch.no_grad(), mamba2.scan_impl(m, impl, chunk=8):
            assert m._scan(37) is (ssd_chunked_fast if impl == "fast" else ssd_chunked) and m.scan_chunk == 8
            outs.append(torch.cat([m(first, cache), m(second, cache)], dim=1))
        states.append(cache.ssm.clone())
        assert (m.scan_impl, m.scan_chunk) == ("auto", None)       # restored after the block
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(states[1], states[0], rtol=1e-10, atol=1e-10)
    with torch.no_grad(), mamba2.scan_impl(m, "compiled"):   # compiled from COMPILED_MIN_LEN tokens on
        n = mamba2.COMPILED_MIN_LEN
        assert m._scan(n) is ssd_chunked_compiled and m._scan(n - 1) is ssd_chunked_fast


def test_scan_choice_by_where_it_runs(monkeypatch):
    """"auto": Triton for CUDA training (eager or compiled) and long CUDA prefills, the compiled PyTorch
    scan for training without Triton, the reference on CPU, in short prefills and decoding."""
    from mambagen.layers import kernels, mamba2
    from mambagen.layers.ssd_fast import ssd_chunked_recomputed
    marker = object()
    monkeypatch.setattr(kernels, "ssd_chunked_triton", marker)
    choose = lambda length=256, **kw: mamba2.choose_scan(kw.pop("impl", "auto"), length, **{
        "cuda": True, "training": True, **kw})
    assert choose() is marker
    assert choose(training=False) is marker and choose(length=63, training=False) is ssd_chunked
    assert choose(cuda=False) is ssd_chunked and choose(cuda=False, training=False) is ssd_chunked
    assert choose(impl="reference") is ssd_chunked and choose(impl="triton") is marker
    monkeypatch.setattr(kernels, "ssd_chunked_triton", None)
    assert choose() is ssd_chunked_recomputed and choose(training=False) is ssd_chunked
    with pytest.raises(RuntimeError, match="needs Triton"):
        choose(impl="triton")


def test_compiled_training_does_not_ask_about_capture(monkeypatch):
    """Mamba2._scan keeps CUDA-graph captures on the reference by asking torch whether the stream is
    capturing; inside torch.compile that query breaks the graph (one break per layer of a compiled AiM-B on
    the H200: bench/results/h200_run26c_graph_breaks.json), so a compiled training graph, never captured,
    must not ask. A layer on CUDA (seen through its in_proj weight) without a GPU here."""
    from types import SimpleNamespace
    from mambagen.layers import kernels
    m = Mamba2(d_model=16, d_state=8, headdim=8)
    del m._modules["in_proj"]
    object.__setattr__(m, "in_proj", SimpleNamespace(weight=SimpleNamespace(is_cuda=True)))   # not a module
    asked = []
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: asked.append(1) or True)
    triton_scan = object()
    monkeypatch.setattr(kernels, "ssd_chunked_triton", triton_scan)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert m._scan(256) is triton_scan and asked == []                 # compiled training: no query
    with torch.no_grad():
        assert m._scan(256) is ssd_chunked and asked == [1]           # compiled inference may be captured
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    assert m._scan(256) is ssd_chunked and asked == [1, 1]            # eager: a capture gets the reference


def test_reference_only_keeps_every_layer_on_its_reference():
    """Inside kernels.reference_only() "auto" picks the reference scan on CUDA too; the reference sampler
    (`Sampler(fast=False)`, `mambagen sample --reference`) runs inside it; nesting restores the state."""
    import mambagen
    from mambagen.layers import kernels, mamba2
    from mambagen.sample import pipeline
    assert kernels.kernels_allowed()
    with kernels.reference_only():
        assert not kernels.kernels_allowed()
        with kernels.reference_only():
            pass
        assert not kernels.kernels_allowed()
        assert mamba2.choose_scan("auto", 256, cuda=True, training=True) is ssd_chunked
        m = Mamba2(d_model=16, d_state=8, headdim=8)
        m.use_kernels = True
        assert not m._kernels_here(torch.zeros(1))
    assert kernels.kernels_allowed()
    from mambagen.sample.config import SamplingConfig
    model = mambagen.create_model("aim-tiny").eval()
    tokenizer = mambagen.create_tokenizer("vq-tiny").eval()
    seen, prefill = [], model.prefill
    model.prefill = lambda *a, **k: seen.append(kernels.kernels_allowed()) or prefill(*a, **k)
    pipeline.Sampler(model, tokenizer, SamplingConfig(), fast=False).tokens(torch.tensor([0, 1]))
    assert seen == [False] and kernels.kernels_allowed()
