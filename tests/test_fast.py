"""The GPU fast paths' parts that run on a CPU: the raster loop and its in-graph sampling, ARPG's compiled
block steps, M-VAR's tensor-core scan and compiled blocks, and `sample_images`' dispatch. Graph capture is
CUDA-only: the graphed runs are checked on the GPU by bench/check_fast_gpu.py (results committed)."""
import pytest
import torch

import mambagen
from mambagen.models.aim_fast import AiMFastDecode
from mambagen.models.gpt import GPTFastDecode
from mambagen.sample.fast import GraphedRasterSampler
from mambagen.sample.logits import gumbel_max
from mambagen.sample.raster import generate_raster
from mambagen.sample.config import SamplingConfig


def _perturbed_aim_tiny():
    """aim-tiny with its zero-initialised parts perturbed, so every block and the head matter."""
    torch.manual_seed(0)
    model = mambagen.create_model("aim-tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_fast_loop_greedy_equals_reference():
    model = _perturbed_aim_tiny()
    labels = torch.tensor([1, 2, 3])
    ref = generate_raster(model, labels, SamplingConfig(cfg_scale=2.5, top_k=1)).tokens
    fast = GraphedRasterSampler(model, AiMFastDecode, 3, SamplingConfig(cfg_scale=2.5, top_k=1), compile_blocks=False,
                                graph=False)
    assert torch.equal(fast.generate(labels), ref)
    assert torch.equal(fast.generate(labels), ref)   # reusable: the cache is reset by the start


def test_gumbel_max_samples_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    noise = torch.rand(20000, 4, generator=torch.Generator().manual_seed(0))
    draws = gumbel_max(logits, noise, 1.0, 0, 0.7)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015, rtol=0)


def test_gpt_fast_loop_with_device_index_equals_reference():
    torch.manual_seed(0)
    model = mambagen.create_model("gpt-tiny").eval()
    with torch.no_grad():
        model.output.weight.normal_(std=0.5)   # the official zero head would tie every logit
    labels = torch.tensor([1, 2])
    ref = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=1)).tokens
    fast = GraphedRasterSampler(model, GPTFastDecode, 2, SamplingConfig(cfg_scale=2.0, top_k=1), compile_blocks=False,
                                graph=False)
    assert torch.equal(fast.generate(labels), ref)


def test_aim_step_with_deferred_residuals_equals_model_step():
    from mambagen.models.aim_fast import aim_step
    model = _perturbed_aim_tiny()
    with torch.no_grad():
        labels = torch.tensor([1, 2])
        c1, c2 = model.allocate_cache(2), model.allocate_cache(2, ssm_form="state")   # c1: on CPU the SSM history
        model.prefill(labels, c1), model.prefill(labels, c2)
        for i, tok in enumerate(torch.randint(0, 256, (4, 2))):
            torch.testing.assert_close(aim_step(model, tok, c2, i), model.step(tok, c1, i), rtol=1e-5, atol=1e-5)


def test_arpg_compiled_block_steps_equal_reference():
    """ARPG's fast path compiles its two block steps, dynamic in tokens / queries per step (the
    GPU sampler then captures the whole call): same greedy tokens, close logits, few compilations."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from mambagen.models.arpg import ARPGFastCall
    from mambagen.sample.random_order import generate_random_order
    torch.manual_seed(0)
    model = mambagen.create_model("arpg-tiny").eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.5)                # the official zero head would tie every logit
    labels = torch.tensor([1, 2, 3])
    order = torch.randperm(model.config.num_tokens)
    torch._dynamo.reset()
    counters.clear()
    steps = ARPGFastCall(model).block_steps
    run = lambda bs: generate_random_order(model, labels, SamplingConfig(steps=8, cfg_scale=2.0, top_k=1), order=order, return_logits=True, block_steps=bs)
    ref, fast = run(None), run(steps)
    assert ref.tokens_per_step == [2, 1, 1, 2, 1, 2, 2, 5]    # 1, 2 and 5 tokens / queries per step
    assert torch.equal(fast.tokens, ref.tokens)
    torch.testing.assert_close(fast.step_logits, ref.step_logits, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] <= 8


def test_sample_images_dispatches_to_a_kept_fast_sampler(monkeypatch):
    """fast=True builds the family's fast sampler once per setting and keeps it; greedy it gives the
    reference's tokens (here on CPU, uncompiled and without graphs: the dispatch, not the GPU)."""
    from mambagen.layers import kernels
    from mambagen.sample import pipeline
    from mambagen.tokenizers import create_tokenizer
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    model = _perturbed_aim_tiny()
    tok = create_tokenizer("vq-tiny").eval()
    labels = torch.tensor([1, 2, 3])
    ref_img, ref_tok = pipeline.sample_images(model, tok, labels, SamplingConfig(cfg_scale=2.5, temperature=0.0), fast=False)
    img, tokens = pipeline.sample_images(model, tok, labels, SamplingConfig(cfg_scale=2.5, temperature=0.0), fast=True)
    assert torch.equal(tokens, ref_tok) and torch.equal(img, ref_img)
    kept = pipeline._FAST_SAMPLERS[model]
    assert len(kept) == 1 and isinstance(next(iter(kept.values())), GraphedRasterSampler)
    pipeline.sample_images(model, tok, labels, SamplingConfig(cfg_scale=2.5, temperature=0.0), fast=True)
    assert len(pipeline._FAST_SAMPLERS[model]) == 1                      # reused, not rebuilt


def test_whole_call_sampler_needs_cuda():
    from mambagen.sample.graphs import GraphedCallSampler
    with pytest.raises(ValueError, match="CUDA"):
        from mambagen.models.arpg import ARPGFastCall
        model = mambagen.create_model("arpg-tiny")
        GraphedCallSampler(model, 2, lambda *a: None, ARPGFastCall(model, compile_blocks=False))


def test_mvar_sampling_on_the_fast_path_equals_reference(monkeypatch):
    """What M-VAR's graphed sampler runs - the tensor-core scan (chunk 4 here, so that scales span
    several chunks) and, from COMPILED_MIN_LEN tokens on (9 here: the two largest of mvar-tiny's
    scales), compiled blocks - samples the reference's tokens, carrying the state across scales."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from mambagen.layers import mamba2
    from mambagen.models.mvar import MVARFastCall
    from mambagen.sample.scales import generate_scales
    torch.manual_seed(0)
    model = mambagen.create_model("mvar-tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tok = mambagen.create_tokenizer("msvq-tiny").eval()
    labels = torch.tensor([1, 2, 3])
    run = lambda step: generate_scales(model, tok.quantize, labels, SamplingConfig(cfg_scale=1 + 1.5, top_k=1), return_logits=True, block_step=step)
    ref = run(None)
    monkeypatch.setattr(mamba2, "COMPILED_MIN_LEN", 9)
    torch._dynamo.reset()
    counters.clear()
    for impl, step in (("fast", None), ("compiled", MVARFastCall(model).block_steps)):
        with mamba2.scan_impl(model, impl, chunk=4):
            fast = run(step)
        assert all(torch.equal(a, b) for a, b in zip(fast.indices, ref.indices)), impl
        for a, b in zip(fast.logits, ref.logits):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 2          # the blocks of scales 3x3 and 4x4


def test_per_row_streams_fast_raster_equals_reference_and_ignores_batch_mates():
    """Under RowStreams the graphed step sampler (here eager, on CPU) draws the reference loop's own
    numbers: the same sampled tokens, and a row's tokens depend on its seed only."""
    from mambagen.sample.streams import RowStreams
    model = _perturbed_aim_tiny()
    labels = torch.tensor([1, 2, 3])
    s = SamplingConfig(cfg_scale=2.5, top_k=50, temperature=1.2)
    rng = RowStreams.from_seeds([11, 12, 13])
    ref = generate_raster(model, labels, s, rng).tokens
    fast = GraphedRasterSampler(model, AiMFastDecode, 3, s, rows=True, compile_blocks=False, graph=False)
    assert torch.equal(fast.generate(labels, rng), ref)
    alone = generate_raster(model, labels[2:], s, RowStreams.from_seeds([13])).tokens
    assert torch.equal(alone, ref[2:]) and not torch.equal(ref[0], ref[1])
    with pytest.raises(ValueError, match="per-row streams"):
        fast.generate(labels, torch.Generator().manual_seed(0))


def test_family_options_of_other_families_are_refused():
    from mambagen.sample.pipeline import Sampler
    model = _perturbed_aim_tiny()
    tok = mambagen.create_tokenizer("vq-tiny")
    with pytest.raises(ValueError, match="steps: not an option of aim sampling"):
        Sampler(model, tok, SamplingConfig(steps=8))
    with pytest.raises(ValueError, match="does not fit a aim generator"):
        Sampler(model, mambagen.create_tokenizer("msvq-tiny"), SamplingConfig())


def test_raster_edit_on_the_fast_path_keeps_the_rows_above_and_equals_the_reference():
    """The step sampler fed a kept prefix (how AiM/GPT edits run on CUDA; eager here) continues exactly as
    the reference loop's prefill of that prefix does (greedy)."""
    from mambagen.sample.raster import RASTER
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny").eval()
    model = mambagen.create_model("aim-tiny", num_tokens=64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[20:] = True                                               # token rows 5.. regenerated
    s, labels = SamplingConfig(cfg_scale=2.5, top_k=1), torch.tensor([1, 2])
    ref = RASTER.edit(model, tok, images, region, labels, s, None)
    fast = RASTER.edit(model, tok, images, region, labels, s, None, fast=AiMFastDecode)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    sampler = GraphedRasterSampler(model, AiMFastDecode, 2, s, compile_blocks=False, graph=False)
    prefix = tok.encode(images)[:, :40]
    assert torch.equal(sampler.generate(labels, prefix=prefix)[:, :40], prefix)
    assert not torch.equal(sampler.generate(labels)[:, :40], prefix)  # the prefix does not stick to the buffers


def test_the_whole_call_the_gpu_graph_captures_equals_the_reference_on_cpu():
    """What GraphedCallSampler captures on CUDA is the paradigm's `_call`: run it eagerly here (a broken
    helper, e.g. a lost staticmethod, would otherwise show only on a GPU)."""
    import mambagen
    from mambagen.sample.config import SamplingConfig
    from mambagen.sample.random_order import RANDOM_ORDER
    from mambagen.sample.scales import NEXT_SCALE, generate_scales
    sampling = SamplingConfig(cfg_scale=2.0, top_k=1, steps=4)
    labels = torch.tensor([1, 2])
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("msvq-tiny").eval()
    var = mambagen.create_model("var-tiny", vocab_size=tok.codebook_size, Cvae=tok.config.z_channels,
                                patch_nums=tuple(tok.patch_nums)).eval()
    eager = NEXT_SCALE._call(tok.quantize, sampling)(var, labels, torch.Generator().manual_seed(0), None)
    ref = generate_scales(var, tok.quantize, labels, sampling, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(eager.indices, ref.indices))
    arpg = mambagen.create_model("arpg-tiny").eval()
    eager = RANDOM_ORDER._call(sampling)(arpg, labels, torch.Generator().manual_seed(0), None)
    ref = RANDOM_ORDER.reference(arpg, None, labels, sampling, torch.Generator().manual_seed(0))
    assert torch.equal(eager.tokens, ref.tokens)
