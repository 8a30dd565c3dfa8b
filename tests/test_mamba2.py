"""Mamba2: chunked scan == naive recurrence == token-by-token step (float64)."""
import pytest
import torch

from mambagen.layers.mamba2 import Mamba2
from mambagen.layers.ssd_ref import ssd_chunked, ssd_sequential, ssd_step, ssd_step_


def _inputs(b=2, l=19, h=4, p=3, g=2, n=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    x, B, C = r(b, l, h, p), r(b, l, g, n), r(b, l, g, n)
    dt = torch.nn.functional.softplus(r(b, l, h))
    A = -torch.exp(r(h) * 0.5)
    s0 = r(b, h, p, n)
    return x, dt, A, B, C, s0


@pytest.mark.parametrize("chunk", [1, 4, 7, 19, 64])
def test_chunked_scan_equals_recurrence(chunk):
    x, dt, A, B, C, s0 = _inputs()
    y_ref, s_ref = ssd_sequential(x, dt, A, B, C, initial_state=s0)
    y, s = ssd_chunked(x, dt, A, B, C, chunk, initial_state=s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_chunked_scan_can_resume_from_its_final_state():
    x, dt, A, B, C, _ = _inputs(l=23)
    y_all, s_all = ssd_chunked(x, dt, A, B, C, 8)
    y1, s1 = ssd_chunked(x[:, :10], dt[:, :10], A, B[:, :10], C[:, :10], 8)
    y2, s2 = ssd_chunked(x[:, 10:], dt[:, 10:], A, B[:, 10:], C[:, 10:], 8, initial_state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_all, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s_all, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_in_place_step_equals_the_step(groups):
    """ssd_step_ (CPU decoding) is ssd_step with the state written over, step after step."""
    x, dt, A, B, C, s0 = _inputs(l=6, g=groups)
    state, ref = s0.clone(), s0.clone()
    storage = state.data_ptr()
    for t in range(6):
        y_ref, ref = ssd_step(ref, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        y = ssd_step_(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state, ref, rtol=1e-12, atol=1e-12)
    assert state.data_ptr() == storage


def _mixer(chunk=8, ngroups=2):
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=ngroups, chunk_size=chunk).double()
    with torch.no_grad():  # non-trivial conv bias / D so every path matters
        m.conv1d.bias.normal_()
        m.D.normal_()
    return m


@pytest.mark.parametrize("grad", [True, False])   # decoding (no grad) updates the state in place
@pytest.mark.parametrize("form", ["state", "history"])   # history: decoding from the token history (ssd_history)
def test_mixer_step_by_step_equals_parallel_forward(grad, form):
    m = _mixer()
    u = torch.randn(3, 21, 16, dtype=torch.float64)
    y_par = m(u)
    cache = m.allocate_cache(3, dtype=torch.float64, max_len=21, ssm_form=form)
    with torch.set_grad_enabled(grad):
        y_seq = torch.stack([m.step(u[:, t], cache) for t in range(u.shape[1])], dim=1)
    torch.testing.assert_close(y_seq, y_par, rtol=1e-9, atol=1e-9)


def test_mixer_forward_with_cache_continues_exactly():
    """Prefill part of a sequence, then continue in chunks and single steps (M-VAR carries state so)."""
    m = _mixer()
    u = torch.randn(2, 30, 16, dtype=torch.float64)
    y_par = m(u)
    cache = m.allocate_cache(2, dtype=torch.float64)
    parts = [m(u[:, :9], cache), m(u[:, 9:10], cache), m.step(u[:, 10], cache)[:, None], m(u[:, 11:], cache)]
    torch.testing.assert_close(torch.cat(parts, 1), y_par, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prefix", [1, 7])
def test_history_cache_continues_a_prefill_exactly(prefix):
    """A history cache takes the start of a sequence as a whole (AiM's class token and a kept prefix), then
    steps: the same outputs as the parallel forward, and as the state cache."""
    m = _mixer()
    u = torch.randn(2, 12, 16, dtype=torch.float64)
    y_par = m(u)
    cache = m.allocate_cache(2, dtype=torch.float64, max_len=12, ssm_form="history")
    parts = [m(u[:, :prefix], cache)] + [m.step(u[:, t], cache)[:, None] for t in range(prefix, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), y_par, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="holds 12 tokens"):
        m.step(u[:, 0], cache)
    cache.reset()
    m(u[:, :3], cache)
    with pytest.raises(ValueError, match="only at its start"):
        m(u[:, 3:5], cache)


def test_auto_ssm_form_is_the_history_for_short_cpu_decodes():
    m = _mixer()                                     # d_state 8: the history up to 4 x 8 tokens
    assert m.allocate_cache(1, max_len=32).history is not None
    assert m.allocate_cache(1, max_len=33).history is None
    assert m.allocate_cache(1).history is None       # length unknown (M-VAR's cache)
    with pytest.raises(ValueError, match="needs max_len"):
        m.allocate_cache(1, ssm_form="history")


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunk_size_does_not_change_results(chunk):
    m = _mixer(chunk=8)
    u = torch.randn(2, 17, 16, dtype=torch.float64)
    ref = m(u)
    m.chunk_size = chunk
    torch.testing.assert_close(m(u), ref, rtol=1e-10, atol=1e-10)


def test_gradients_reach_every_parameter():
    m = _mixer().float()
    u = torch.randn(2, 12, 16, requires_grad=True)
    m(u).square().mean().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_state_dict_names_match_official_mamba2():
    m = Mamba2(d_model=768)  # AiM-B mixer
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (3352, 768), "conv1d.weight": (1792, 1, 4), "conv1d.bias": (1792,),
        "dt_bias": (24,), "A_log": (24,), "D": (24,), "norm.weight": (1536,), "out_proj.weight": (768, 1536),
    }


def test_compiled_depthwise_conv_equals_conv1d():
    """The conv as a sum of shifted products (what compiled graphs run) equals the library conv1d,
    forward and backward."""
    torch.manual_seed(0)
    m = Mamba2(d_model=16, d_state=8, headdim=8).double()
    x = torch.randn(2, m.d_conv - 1 + 7, m.conv_dim, dtype=torch.float64, requires_grad=True)
    ref = m._depthwise_conv(x)
    ref.square().sum().backward()
    grads = [x.grad.clone(), m.conv1d.weight.grad.clone(), m.conv1d.bias.grad.clone()]
    x.grad = m.conv1d.weight.grad = m.conv1d.bias.grad = None
    traced = []

    def backend(gm, example_inputs):                                # run the traced graph as it is
        traced.extend(str(node.target) for node in gm.graph.nodes)
        return gm.forward
    out = torch.compile(m._depthwise_conv, backend=backend)(x)
    out.square().sum().backward()
    assert traced and not any("conv" in t and "parameters" not in t for t in traced)   # the shifted-sum form
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous()                                      # row-major (B, L, conv_dim): what the scan reads
    for a, b in zip([x.grad, m.conv1d.weight.grad, m.conv1d.bias.grad], grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
