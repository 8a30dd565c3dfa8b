"""Our Triton conv+SiLU and gated RMSNorm (kernels/conv_silu.py, kernels/gated_norm.py) against their
references: values and every gradient, then a whole Mamba2 forward and backward with all three
training kernels (the scan too) against the reference mixer.

On a CPU machine the kernels run in Triton's interpreter (tests/conftest.py); on a GPU on the GPU
(bench/check_fast_gpu.py repeats the mixer check at AiM-L's size in bf16)."""
import pytest
import torch

pytest.importorskip("triton")

from mambagen.kernels.conv_silu import conv_silu, conv_silu_reference  # noqa: E402
from mambagen.kernels.gated_norm import gated_rms_norm  # noqa: E402
from mambagen.layers.mamba2 import Mamba2, set_kernels, set_scan_impl  # noqa: E402
from mambagen.layers.norm import RMSNormGated  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _grads(out, inputs, weight):
    return torch.autograd.grad((out.double() * weight).sum(), inputs)


@pytest.mark.parametrize("B,L,D,K,bias", [(2, 37, 200, 4, True), (1, 5, 16, 4, False), (2, 70, 40, 3, True)])
def test_conv_silu_equals_reference(B, L, D, K, bias):
    """Also on a channels-last slice of a wider tensor (how in_proj's output arrives), over tile edges."""
    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(B, L, D + 13, generator=gen).to(DEVICE).requires_grad_()
    w, b = torch.randn(D, K, generator=gen), torch.randn(D, generator=gen)
    ref = [t.detach().double().to(DEVICE).requires_grad_() for t in ((wide[:, :, 5:5 + D], w, b) if bias else (wide[:, :, 5:5 + D], w))]
    ours = [t.detach().float().to(DEVICE).requires_grad_() for t in ref[1:]]
    x = wide[:, :, 5:5 + D]
    assert not x.is_contiguous()
    r = conv_silu_reference(*ref, *(() if bias else (None,)))
    o = conv_silu(x, *ours, *(() if bias else (None,)))
    assert o.shape == r.shape and o.is_contiguous() and _rel(o, r) < 1e-5
    wgt = torch.randn_like(r)
    got = _grads(o, [wide] + ours, wgt)
    assert got[0][:, :, :5].abs().max() == 0 and got[0][:, :, 5 + D:].abs().max() == 0
    for a, c in zip((got[0][:, :, 5:5 + D],) + got[1:], _grads(r, ref, wgt)):
        assert a.shape == c.shape and _rel(a, c) < 1e-5


@pytest.mark.parametrize("lead,W,group", [((2, 7), 64, 64), ((3, 5), 96, 32), ((37,), 40, 20)])
@pytest.mark.parametrize("small_tiles", [False, True])
def test_gated_norm_equals_reference(lead, W, group, small_tiles, monkeypatch):
    """Whole rows and groups (ngroups > 1), group widths that are not powers of two, ragged row tiles; with
    small tiles, many backward programs each summing several tiles of the weight gradient."""
    from mambagen.kernels import gated_norm
    if small_tiles:
        monkeypatch.setattr(gated_norm, "TILE", 64)
        monkeypatch.setattr(gated_norm, "ITERS", 3)
    torch.manual_seed(0)
    norm = RMSNormGated(W, group_size=group).double().to(DEVICE)
    with torch.no_grad():
        norm.weight.normal_()
    x, z = (torch.randn(*lead, W, dtype=torch.float64, device=DEVICE, requires_grad=True) for _ in range(2))
    r = norm(x, z)
    ours = [t.detach().float().requires_grad_() for t in (x, z, norm.weight)]
    o = gated_rms_norm(*ours, group, norm.eps)
    assert o.dtype == torch.float32 and _rel(o, r) < 1e-5
    wgt = torch.randn_like(r)
    for a, c in zip(_grads(o, ours, wgt), _grads(r, (x, z, norm.weight), wgt)):
        assert _rel(a, c) < 1e-5


@pytest.mark.parametrize("conv_and_norm", [False, True])
def test_mixer_on_the_training_kernels_equals_the_reference_mixer(monkeypatch, conv_and_norm):
    """Mamba2 forward + backward (every parameter's gradient) with the Triton scan, alone and with the Triton
    conv and gated norm (made to run here: on CPU they would not be chosen), against the all-PyTorch mixer."""
    monkeypatch.setattr(Mamba2, "_kernels_here", lambda self, t: self.use_kernels)
    torch.manual_seed(0)
    m = Mamba2(d_model=32, d_state=16, headdim=16, ngroups=2, chunk_size=16).to(DEVICE)
    u = torch.randn(2, 21, 32, device=DEVICE)
    outs = []
    for on in (False, True):
        set_kernels(m, on and conv_and_norm)
        set_scan_impl(m, "triton" if on else "reference")
        m.zero_grad()
        out = m(u)
        out.square().sum().backward()
        outs.append((out, [p.grad.clone() for p in m.parameters()]))
    assert _rel(outs[1][0], outs[0][0]) < 1e-5
    for (name, _), a, b in zip(m.named_parameters(), outs[1][1], outs[0][1]):
        assert _rel(a, b) < 1e-4, name


def test_kernels_are_opt_in_and_only_for_eager_cuda():
    m = Mamba2(d_model=32, d_state=16, headdim=16)
    assert not m.use_kernels                                            # opt-in until timed on a GPU
    set_kernels(m, True)
    assert not m._kernels_here(torch.zeros(1))                          # CPU: the PyTorch code
    if torch.cuda.is_available():
        assert m._kernels_here(torch.zeros(1, device="cuda"))
        set_kernels(m, False)
        assert not m._kernels_here(torch.zeros(1, device="cuda"))
