"""Our Triton SSD scan (kernels/ssd_scan.py) against the reference scan: outputs, final state and the
gradients of every input, across chunkings, padding, groups and head splits.

On a CPU machine the kernels run in Triton's interpreter (tests/conftest.py); the same comparison on
the GPU, in bf16 and at AiM-L's shapes, is in bench/check_fast_gpu.py (results committed)."""
import pytest
import torch

pytest.importorskip("triton")

from mambagen.kernels import ssd_scan  # noqa: E402
from mambagen.kernels.ssd_scan import ssd_chunked_triton  # noqa: E402
from mambagen.layers.ssd_ref import ssd_chunked  # noqa: E402

from test_mamba2 import _inputs as _cpu_inputs  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"   # the interpreter on CPU, the kernels on a GPU


def _inputs(**kw):
    return [t.to(DEVICE) for t in _cpu_inputs(**kw)]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("l,chunk,h,g,with_state,with_dfinal", [
    (40, 16, 4, 2, True, True),     # three chunks, the last one padded
    (19, 32, 2, 1, False, True),    # one chunk shorter than the chunk size
    (48, 24, 24, 1, True, False),   # chunk not a power of two; 24 heads per group: 8 programs of 3 heads
    (33, 8, 6, 3, False, False),    # many chunks; no gradient reaches the final state
    (1, 16, 2, 2, True, True),      # one token; a group per head
    (9, 1, 2, 1, True, True),       # chunks of one step: everything goes through the carry
])
def test_triton_scan_equals_reference_with_gradients(l, chunk, h, g, with_state, with_dfinal):
    x, dt, A, B, C, s0 = _inputs(b=2, l=l, h=h, p=16, g=g, n=16)
    x, dt, A, B, C, s0 = (t * 0.5 if t is dt else t for t in (x, dt, A, B, C, s0))
    s0 = s0 if with_state else None
    ref_in = [t.requires_grad_() for t in (x, dt, A, B, C, s0) if t is not None]
    ours_in = [t.detach().float().requires_grad_() for t in ref_in]
    gen = torch.Generator().manual_seed(1)
    wy, ws = (torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEVICE) for shape in ((2, l, h, 16), (2, h, 16, 16)))

    def loss(scan, inputs):
        y, s = scan(*inputs[:5], chunk, initial_state=inputs[5] if with_state else None)
        return y, s, (y * wy.to(y.dtype)).sum() + ((s * ws.to(s.dtype)).sum() if with_dfinal else 0)

    y_ref, s_ref, l_ref = loss(ssd_chunked, ref_in)
    y, s, l_ours = loss(ssd_chunked_triton, ours_in)
    assert y.dtype == s.dtype == torch.float32 and y.shape == y_ref.shape and s.shape == s_ref.shape
    assert _rel(y, y_ref) < 1e-5 and _rel(s, s_ref) < 1e-5
    for name, a, b in zip("x dt A B C s0".split(), torch.autograd.grad(l_ours, ours_in), torch.autograd.grad(l_ref, ref_in)):
        assert a.shape == b.shape and _rel(a, b) < 1e-4, name


@pytest.mark.parametrize("rows", sorted(set(ssd_scan.Y_ROWS + ssd_scan.BACKWARD_ROWS)))
def test_every_tile_the_tuner_may_pick_gives_the_reference(rows, monkeypatch):
    """The interpreter runs each kernel's first tile only; a GPU's tuner may pick any in its list. Each tile,
    forced on every kernel that lists it: a chunk of 48 is three tiles of 16, two of 32 (the last half
    masked) or one of 64, so tiles that split a chunk, pad it and cover it whole are all exercised."""
    import triton
    for kernel, options in ((ssd_scan._y_kernel, ssd_scan.Y_ROWS), (ssd_scan._bwd_dx_db_kernel, ssd_scan.BACKWARD_ROWS),
                            (ssd_scan._bwd_dc_kernel, ssd_scan.BACKWARD_ROWS)):
        if rows in options:
            monkeypatch.setattr(kernel, "configs", [triton.Config({"BLOCK": rows}, num_warps=4, num_stages=2)])
    x, dt, A, B, C, s0 = _inputs(b=1, l=96, h=4, p=16, g=2, n=16)
    ref_in = [t.requires_grad_() for t in (x, dt * 0.5, A, B, C, s0)]
    ours_in = [t.detach().float().requires_grad_() for t in ref_in]
    wy = torch.randn(1, 96, 4, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(DEVICE)
    outs = []
    for scan, inputs in ((ssd_chunked, ref_in), (ssd_chunked_triton, ours_in)):
        y, s = scan(*inputs[:5], 48, initial_state=inputs[5])
        outs.append((y, s, torch.autograd.grad((y * wy.to(y.dtype)).sum() + s.sum(), inputs)))
    (y_ref, s_ref, g_ref), (y, s, g) = outs
    assert _rel(y, y_ref) < 1e-5 and _rel(s, s_ref) < 1e-5
    for name, a, b in zip("x dt A B C s0".split(), g, g_ref):
        assert _rel(a, b) < 1e-4, name


def test_triton_scan_reads_x_b_c_in_place_as_views_of_the_conv_output():
    """x, B and C come as column slices of one (b, l, conv_dim) tensor (the conv output): the kernels read
    them where they are (no copy) and give the reference's values and gradients, the gradient of the
    conv output included; a channel-major layout (what a transposed conv output is) is copied first."""
    b, l, h, p, g, n = 2, 24, 4, 8, 2, 16
    gen = torch.Generator().manual_seed(3)
    xbc = torch.randn(b, l, h * p + 2 * g * n, generator=gen, dtype=torch.float64).to(DEVICE)
    dt = (torch.rand(b, l, h, generator=gen, dtype=torch.float64) * 0.5 + 0.05).to(DEVICE)
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) + 0.5).to(DEVICE)
    wy = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64).to(DEVICE)

    def run(scan, conv_out):
        x, B, C = torch.split(conv_out, [h * p, g * n, g * n], dim=-1)
        x, B, C = x.unflatten(-1, (h, p)), B.unflatten(-1, (g, n)), C.unflatten(-1, (g, n))
        y, _ = scan(x, dt, A, B, C, 8)
        return y, torch.autograd.grad((y * wy.to(y.dtype)).sum(), conv_out)[0]

    y_ref, g_ref = run(ssd_chunked, xbc.clone().requires_grad_())
    y, grad = run(ssd_chunked_triton, xbc.float().requires_grad_())
    assert _rel(y, y_ref) < 1e-5 and _rel(grad, g_ref) < 1e-4
    x_view = xbc.float()[..., : h * p].unflatten(-1, (h, p))
    assert ssd_scan._packed_rows(x_view) is x_view                          # read in place
    channel_major = xbc.float().transpose(1, 2).contiguous().transpose(1, 2)[..., : h * p].unflatten(-1, (h, p))
    copied = ssd_scan._packed_rows(channel_major)
    assert copied is not channel_major and copied.is_contiguous() and torch.equal(copied, x_view)


def test_head_split_of_the_backward_programs():
    """Every group's heads are shared out evenly over at most MAX_PARTIALS programs."""
    assert [ssd_scan._heads_per_program(r) for r in (1, 6, 7, 12, 24, 32, 64)] == [1, 1, 1, 2, 3, 4, 8]


@pytest.mark.parametrize("half", [
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="Triton 3.9's interpreter computes bf16 dots wrongly (fp16 is the same path)")),
])
def test_triton_scan_in_half_precision_stays_close_to_float32_reference(half):
    """Half-precision operands (what autocast feeds it) with float32 decays, states and sums: rounding only."""
    x, dt, A, B, C, s0 = _inputs(b=1, l=64, h=2, p=16, g=1, n=16, dtype=torch.float32)
    y_ref, s_ref = ssd_chunked(x, dt * 0.1, A, B, C, 32, initial_state=s0)
    y, s = ssd_chunked_triton(x.to(half), dt * 0.1, A, B.to(half), C.to(half), 32, initial_state=s0)
    assert _rel(y, y_ref) < 2e-2 and _rel(s, s_ref) < 2e-2
    with pytest.raises(ValueError, match="float32, bf16 or fp16"):
        ssd_chunked_triton(x.double(), dt, A, B, C, 32)


def test_custom_op_registration_is_consistent():
    """torch.library's own checks: fake shapes and strides match the real ops, autograd is registered, no
    aliasing; on inputs laid out as the mixer passes them (views of one in_proj output) and a padded length."""
    x, dt, A, B, C, s0 = (t.float() for t in _inputs(b=1, l=20, h=2, p=16, g=1, n=16))
    # (b, l, h*p + 2*g*n) channels-first underneath, as the mixer's conv output
    xBC = torch.cat([x.flatten(2), B.flatten(2), C.flatten(2)], dim=-1).transpose(1, 2).contiguous().transpose(1, 2)
    x, B, C = (t.unflatten(-1, shape) for t, shape in zip(xBC.split([32, 16, 16], dim=-1), ((2, 16), (1, 16), (1, 16))))
    assert not x.is_contiguous()
    checks = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(ssd_scan._scan_op, (x, dt, A, B, C, s0, 16), test_utils=checks)
    y, final, states = ssd_scan._scan_op(x, dt, A, B, C, s0, 16)
    torch.library.opcheck(ssd_scan._scan_backward_op, (torch.randn_like(y), torch.randn_like(final), x, dt, A, B, C,
                                                       states, 16), test_utils=("test_schema", "test_faketensor"))
    # half-precision operands: the carried states are stored in that dtype (the fake kernel says so too)
    xh, Bh, Ch = x.half(), B.half(), C.half()
    torch.library.opcheck(ssd_scan._scan_op, (xh, dt, A, Bh, Ch, s0, 16), test_utils=checks)
    y, final, states = ssd_scan._scan_op(xh, dt, A, Bh, Ch, s0, 16)
    assert states.dtype == torch.float16 and final.dtype == y.dtype == torch.float32
    torch.library.opcheck(ssd_scan._scan_backward_op, (torch.randn_like(y), torch.randn_like(final), xh, dt, A, Bh, Ch,
                                                       states, 16), test_utils=("test_schema", "test_faketensor"))
