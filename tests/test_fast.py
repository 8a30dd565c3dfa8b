"""The fast raster path (graph capture is CUDA-only; its loop and in-graph sampling are tested here,
the graphed run on the GPU in bench/ with results committed)."""
import torch

import mambagen
from mambagen.sample.fast import GraphedRasterSampler, sample_with_noise
from mambagen.sample.raster import generate_raster


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
    ref = generate_raster(model, labels, cfg_scale=2.5, top_k=1).tokens
    fast = GraphedRasterSampler(model, 3, cfg_scale=2.5, top_k=1, compile_blocks=False, graph=False)
    assert torch.equal(fast.generate(labels), ref)
    assert torch.equal(fast.generate(labels), ref)   # reusable: the cache is reset by the start


def test_gumbel_max_samples_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    noise = torch.rand(20000, 4, generator=torch.Generator().manual_seed(0))
    draws = sample_with_noise(logits, noise, 1.0, 0, 0.7)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015, rtol=0)


def test_gpt_fast_loop_with_device_index_equals_reference():
    torch.manual_seed(0)
    model = mambagen.create_model("gpt-tiny").eval()
    with torch.no_grad():
        model.output.weight.normal_(std=0.5)   # the official zero head would tie every logit
    labels = torch.tensor([1, 2])
    ref = generate_raster(model, labels, cfg_scale=2.0, top_k=1).tokens
    fast = GraphedRasterSampler(model, 2, cfg_scale=2.0, top_k=1, compile_blocks=False, graph=False)
    assert torch.equal(fast.generate(labels), ref)


def test_aim_step_with_deferred_residuals_equals_model_step():
    from mambagen.sample.fast import aim_step
    model = _perturbed_aim_tiny()
    with torch.no_grad():
        labels = torch.tensor([1, 2])
        c1, c2 = model.allocate_cache(2), model.allocate_cache(2)
        model.prefill(labels, c1), model.prefill(labels, c2)
        for i, tok in enumerate(torch.randint(0, 256, (4, 2))):
            torch.testing.assert_close(aim_step(model, tok, c2, i), model.step(tok, c1, i), rtol=1e-5, atol=1e-5)


def test_arpg_compiled_block_steps_equal_reference():
    """ARPG's fast path compiles its two block steps, dynamic in tokens / queries per step (the
    GPU sampler then captures the whole call): same greedy tokens, close logits, few compilations."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from mambagen.sample.fast import compiled_block_step
    from mambagen.sample.random_order import generate_random_order
    torch.manual_seed(0)
    model = mambagen.create_model("arpg-tiny").eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.5)                # the official zero head would tie every logit
    labels = torch.tensor([1, 2, 3])
    order = torch.randperm(model.config.num_tokens)
    torch._dynamo.reset()
    counters.clear()
    steps = compiled_block_step(model)
    run = lambda bs: generate_random_order(model, labels, num_iter=8, cfg_scale=2.0, top_k=1, order=order,
                                           return_logits=True, block_steps=bs)
    ref, fast = run(None), run(steps)
    assert ref.tokens_per_step == [2, 1, 1, 2, 1, 2, 2, 5]    # 1, 2 and 5 tokens / queries per step
    assert torch.equal(fast.tokens, ref.tokens)
    torch.testing.assert_close(fast.step_logits, ref.step_logits, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] <= 8
