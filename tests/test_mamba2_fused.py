"""The fused Triton decode step of Mamba2 (kernels/mamba2_step.py) against the reference step.

On a CPU machine the kernel runs in Triton's interpreter (tests/conftest.py); without Triton these
tests are skipped. The same comparison on the GPU is in bench/check_fast_gpu.py (results committed).
"""
import pytest
import torch

pytest.importorskip("triton")

from mambagen.layers.mamba2 import Mamba2  # noqa: E402
from mambagen.models.aim import AiM, AiMConfig  # noqa: E402
from mambagen.sample.fast import GraphedRasterSampler  # noqa: E402
from mambagen.sample.raster import generate_raster  # noqa: E402
from mambagen.sample.config import SamplingConfig  # noqa: E402
from mambagen.models.aim_fast import AiMFastDecode  # noqa: E402


@pytest.mark.parametrize("options", [
    dict(),
    dict(ngroups=2, D_has_hdim=True, dt_limit=(0.01, 0.05)),     # groups, per-channel skip, clamped dt
    dict(headdim=64, d_state=12, conv_bias=False),                 # two channel blocks per head, odd d_state
])
def test_fused_step_equals_reference_step(options):
    torch.manual_seed(0)
    kw = {"d_state": 8, "headdim": 8, **options}
    m = Mamba2(32, **kw)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    B, prefix, steps = 2, 3, 4
    ref, fused = m.allocate_cache(B), m.allocate_cache(B, paired_conv=True)
    u = torch.randn(B, prefix + steps, 32)
    with torch.no_grad():
        m(u[:, :prefix], ref)
        m(u[:, :prefix], fused)                                   # prefill writes conv_pair[0]
        for t in range(steps):
            a = m.step(u[:, prefix + t], ref)
            b = m.step(u[:, prefix + t], fused, index=torch.tensor(t))
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.ssm, ref.ssm, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused.conv_pair[steps % 2], ref.conv)      # the history sits in the buffer of the next step


def test_paired_cache_needs_index_and_gate_after_norm():
    m = Mamba2(32, d_state=8, headdim=8)
    cache = m.allocate_cache(2, paired_conv=True)
    with pytest.raises(ValueError, match="step index"):
        m.step(torch.randn(2, 32), cache)
    with pytest.raises(ValueError, match="norm_before_gate"):
        Mamba2(32, d_state=8, headdim=8, norm_before_gate=True).allocate_cache(2, paired_conv=True)


@pytest.mark.parametrize("split,scale", [(1, False), (4, True)])
def test_skinny_linear_equals_linear(split, scale):
    from mambagen.kernels.skinny_linear import skinny_linear
    torch.manual_seed(0)
    a, w, s = torch.randn(5, 128), torch.randn(40, 128), torch.rand(128) + 0.5
    y = skinny_linear(a, w, scale=s if scale else None, split=split, block_n=16, block_k=16)
    if split > 1:
        assert y.shape == (split, 5, 40) and y.dtype == torch.float32
        y = y.sum(0)
    torch.testing.assert_close(y, torch.nn.functional.linear(a * s if scale else a, w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_fused_sampler_greedy_equals_reference(ngroups):
    """The whole fused path: graphed-start class step, fused kernel, split-K out_proj with the norm's
    1/rms applied by the next block; greedy tokens equal the reference sampler's."""
    from mambagen.models.aim_fast import _out_proj_block_k
    torch.manual_seed(0)
    model = AiM(AiMConfig(d_model=64, n_layer=2, vocab_size=64, num_classes=4, num_tokens=9, d_state=8,
                          headdim=32, ngroups=ngroups, adaln_groups=2)).eval()   # small: the interpreter is slow
    assert _out_proj_block_k(model.blocks[0].mixer, 4) == 16                     # the split-K out_proj runs
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    labels = torch.tensor([1, 2])
    ref = generate_raster(model, labels, SamplingConfig(cfg_scale=2.5, top_k=1)).tokens
    fast = GraphedRasterSampler(model, AiMFastDecode, 2, SamplingConfig(cfg_scale=2.5, top_k=1), compile_blocks=False,
                                graph=False, fused=True)
    assert fast.decode.cache.layers[0].conv_pair is not None
    assert torch.equal(fast.generate(labels), ref)
