"""ARPG: official counts and keys, cached parallel decoding == recomputation == teacher forcing,
static cache, inpainting / outpainting / resolution expansion, schedules, loader, overfitting."""
import argparse
import dataclasses

import pytest
import torch

from mambagen.convert.arpg import (arpg_config_from_official, convert_arpg_state_dict, infer_official_config,
                                   load_official_arpg, official_config_from_args)
from mambagen.io import CheckpointError, load_weights
from mambagen.models.arpg import FAMILY, ARPG, ARPGConfig
from mambagen.sample.random_order import cfg_schedule, generate_random_order, tokens_per_step
from mambagen.sample.config import SamplingConfig

TINY = dict(FAMILY.sizes["arpg-tiny"].config, token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0, class_dropout=0.0)
V, N, K = TINY["vocab_size"], TINY["num_tokens"], TINY["num_classes"]


def tiny(**kw) -> ARPG:
    torch.manual_seed(0)
    model = ARPG(ARPGConfig(**{**TINY, **kw}))
    with torch.no_grad():  # the zero head (official init) would make every logit 0
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.double().eval()


def count_unique(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", ["arpg-l", "arpg-xl", "arpg-xxl"])
def test_official_parameter_counts_and_keys(name):
    values, official = FAMILY.sizes[name].config, FAMILY.sizes[name].official_params
    with torch.device("meta"):
        model = ARPG(ARPGConfig(**values))
    assert count_unique(model) == official
    state = model.state_dict()
    half = values["n_layer"] // 2
    assert len(state) == 1 + 3 + 2 + half * 9 + half * 7            # 198 for ARPG-L
    assert state["embeddings.weight"].shape == (16384 + 1 + 1000 + 1 + 1, values["dim"])
    assert "layers.cross_dec.0.attn.to_q.weight" in state and "layers.cross_dec.0.attn.to_k.weight" not in state
    assert {"layers.norm.weight", "layers.to_k.weight", "layers.to_v.weight", "norm.weight", "head.weight"} \
        <= set(state)
    assert "rope" not in state


def test_official_init_and_token_space():
    model = ARPG(ARPGConfig(**TINY))
    assert torch.count_nonzero(model.head.weight) == 0
    assert model.class_ids(torch.tensor([0, K])).tolist() == [V + 1, V + 1 + K]    # K = null class row
    assert model.embeddings.weight.shape[0] == V + K + 3
    assert torch.count_nonzero(model.rope[0]) == 0                                 # zero class RoPE row


def test_draw_orders_are_fresh_permutations_from_the_generator():
    model = tiny()
    a = model.draw_orders(5, torch.Generator().manual_seed(1))
    b = model.draw_orders(5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert torch.equal(a.sort(1).values, torch.arange(N).expand(5, N))


# ---------------------------------------------------------------------------- decoding
def test_one_query_per_step_equals_sequential_and_teacher_forcing():
    model = tiny()
    B = 3
    tokens, labels = torch.randint(0, V, (B, N)), torch.tensor([1, 4, K])
    orders = model.draw_orders(B, torch.Generator().manual_seed(0))             # one order per sample
    logits, loss = model(tokens, labels, orders, causal=True)
    assert logits.shape == (B, N, V) and loss.ndim == 0
    # the same logits by hand, one token per step through the cache
    seq = tokens.gather(1, orders)
    cache = model.allocate_cache(B)
    steps = [model.prefill(labels, orders[:, :1], cache)]
    for i in range(1, N):
        steps.append(model.decode_step(seq[:, i - 1:i], orders[:, i - 1:i], orders[:, i:i + 1], cache, start=i))
    torch.testing.assert_close(torch.cat(steps, 1), logits, rtol=1e-9, atol=1e-9)
    # ... and through the sampler (greedy, no CFG, N steps)
    res = generate_random_order(model, labels, SamplingConfig(steps=N, cfg_scale=1.0, top_k=1), order=orders, return_logits=True)
    assert res.tokens_per_step == [1] * N
    ref, _ = model(res.tokens, labels, res.orders, causal=True)
    torch.testing.assert_close(res.step_logits, ref, rtol=1e-9, atol=1e-9)
    # causality is the caller's choice, and it matters
    assert not torch.allclose(model(tokens, labels, orders, causal=False)[0], logits)


def _recompute_step_logits(model, labels, res, causal_within_step=False):
    """Each step's logits from scratch: the prefix [class, tokens of the earlier steps] through the
    self-decoder with the sampler's visibility (block-causal over steps), then the step's queries."""
    B = labels.shape[0]
    counts = [k for k in res.tokens_per_step if k]
    seq = res.tokens.gather(1, res.orders)
    out, done = [], 0
    for k in counts:
        ids = torch.cat([model.class_ids(labels)[:, None], seq[:, :done]], 1)           # (B, 1 + done)
        rows = torch.cat([torch.zeros(B, 1, dtype=torch.long), res.orders[:, :done] + 1], 1)
        group = torch.cat([torch.zeros(1, dtype=torch.long),
                           torch.repeat_interleave(torch.arange(1, len(counts) + 1), torch.tensor(counts))[:done]])
        self_mask = group[None] <= group[:, None]
        if causal_within_step:
            self_mask = torch.ones(1 + done, 1 + done, dtype=torch.bool).tril()
        out.append(model.logits(ids, rows, res.orders[:, done:done + k] + 1, self_mask=self_mask))
        done += k
    return out


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_many_queries_per_step_equal_full_recomputation(cfg_scale):
    model = tiny()
    labels = torch.tensor([2, 7])
    res = generate_random_order(model, labels, SamplingConfig(steps=4, cfg_scale=cfg_scale, cfg_schedule="linear", top_k=1), torch.Generator().manual_seed(3), return_logits=True)
    assert res.tokens_per_step == [3, 3, 3, 7] and torch.equal(res.orders[0], res.orders[1])  # one order per batch
    cond = _recompute_step_logits(model, labels, res)
    null = _recompute_step_logits(model, torch.full_like(labels, K), res)
    done = 0
    for c, u, s, k in zip(cond, null, res.cfg_scales, res.tokens_per_step):
        torch.testing.assert_close(res.step_logits[:, done:done + k], u + (c - u) * s, rtol=1e-9, atol=1e-9)
        done += k
    assert torch.equal(res.tokens.gather(1, res.orders), res.step_logits.argmax(-1))


def test_cache_is_preallocated_and_written_in_place():
    model = tiny()
    cache = model.allocate_cache(4)
    tensors = [t for kv in cache.self_kv + [cache.cross_kv] for t in (kv.k, kv.v)]
    before = [(id(t), t.data_ptr(), t.shape) for t in tensors]
    assert all(t.shape == (4, TINY["n_head"], 1 + N, TINY["dim"] // TINY["n_head"]) for t in tensors)
    generate_random_order(model, torch.tensor([1, 2]), SamplingConfig(steps=5, cfg_scale=2.0), torch.Generator().manual_seed(0), cache=cache)
    after = [t for kv in cache.self_kv + [cache.cross_kv] for t in (kv.k, kv.v)]
    assert [(id(t), t.data_ptr(), t.shape) for t in after] == before
    assert all(torch.count_nonzero(t[:, :, 1:N - 1]) > 0 for t in after)  # written at fixed slots


def test_inpainting_keeps_known_tokens_and_prefill_is_teacher_forcing():
    model = tiny()
    B, Kn = 3, 6
    g = torch.Generator().manual_seed(5)
    known = torch.randint(0, V, (B, N), generator=g)
    known_mask = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):                                               # a different region per sample
        known_mask[b, torch.randperm(N, generator=g)[:Kn]] = True
    labels = torch.tensor([0, 5, 9])
    res = generate_random_order(model, labels, SamplingConfig(steps=4, cfg_scale=2.5, temperature=1.0), g, known=known, known_mask=known_mask, return_logits=True)
    assert torch.equal(res.tokens[known_mask], known[known_mask])
    assert res.num_known == Kn and sum(res.tokens_per_step) == N - Kn and res.step_logits.shape == (B, N - Kn, V)
    assert bool(known_mask.gather(1, res.orders[:, :Kn]).all())
    # one token per step, no CFG: identical to teacher forcing in the order used (known tokens first)
    res = generate_random_order(model, labels, SamplingConfig(steps=N - Kn, cfg_scale=1.0, top_k=1), known=known, known_mask=known_mask, return_logits=True)
    ref, _ = model(res.tokens, labels, res.orders, causal=True)
    torch.testing.assert_close(res.step_logits, ref[:, Kn:], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="same number"):
        bad = known_mask.clone()
        bad[0, ~bad[0]] = True
        generate_random_order(model, labels, SamplingConfig(cfg_scale=4.0), known=known, known_mask=bad)


def test_outpainting_and_resolution_expansion():
    small = tiny()
    big = ARPG(ARPGConfig(**{**TINY, "num_tokens": 36})).double().eval()   # 6 x 6 grid, trained on 4 x 4
    big.load_state_dict(small.state_dict())                                  # RoPE is not a weight
    for r in range(4):
        for c in range(4):
            torch.testing.assert_close(big.rope[1 + 6 * r + c], small.rope[1 + 4 * r + c])
    labels = torch.tensor([3, 8])
    res = generate_random_order(big, labels, SamplingConfig(steps=6, cfg_scale=2.0), torch.Generator().manual_seed(0))
    assert res.tokens.shape == (2, 36) and int(res.tokens.max()) < V and sum(res.tokens_per_step) == 36
    # outpainting: a 4 x 4 image in the middle of the 6 x 6 canvas
    image = torch.randint(0, V, (2, 4, 4))
    canvas = torch.zeros(2, 6, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    canvas[:, 1:5, 1:5], mask[:, 1:5, 1:5] = image, True
    res = generate_random_order(big, labels, SamplingConfig(steps=5, cfg_scale=2.0), torch.Generator().manual_seed(1), known=canvas.flatten(1), known_mask=mask.flatten(1))
    assert torch.equal(res.tokens.view(2, 6, 6)[:, 1:5, 1:5], image) and sum(res.tokens_per_step) == 20


# ---------------------------------------------------------------------------- schedules
def test_schedules_match_hand_computed_values():
    # the fixture's official runs (N = 16)
    assert tokens_per_step(16, 4, "arccos") == [3, 3, 3, 7]
    assert tokens_per_step(16, 4, "cosine") == [2, 3, 5, 6]
    assert tokens_per_step(16, 16, "arccos") == [1] * 16
    assert cfg_schedule([3, 3, 3, 7], 4.0, "linear") == [1.5625, 2.125, 2.6875, 4.0]
    assert cfg_schedule([3, 3, 3, 7], 4.0, "constant") == [4.0] * 4
    # by hand, N = 10, 3 steps: arccos r = 0.784, 0.535 -> masked 7, 5; cosine r = 0.866, 0.5 -> masked 8, 5
    assert tokens_per_step(10, 3, "arccos") == [3, 2, 5]
    assert tokens_per_step(10, 3, "cosine") == [2, 3, 5]
    assert cfg_schedule([3, 2, 5], 3.0) == [1.6, 2.0, 3.0]
    for n, t in [(256, 64), (256, 256), (256, 10), (7, 1), (5, 9), (576, 64)]:
        for s in ("arccos", "cosine"):
            counts = tokens_per_step(n, t, s)
            assert len(counts) == t and sum(counts) == n and min(counts) >= 0 and counts[-1] >= 1
    assert tokens_per_step(5, 9) == [1, 1, 1, 1, 0, 0, 0, 0, 1]       # idle steps once one token is left
    with pytest.raises(ValueError, match="unknown"):
        tokens_per_step(16, 4, "linear")


def test_more_steps_than_tokens_still_decodes():
    model = tiny()
    res = generate_random_order(model, torch.tensor([1]), SamplingConfig(steps=N + 4, cfg_scale=1.0, top_k=1), order=torch.arange(N), return_logits=True)
    ref, _ = model(res.tokens, torch.tensor([1]), res.orders, causal=True)
    torch.testing.assert_close(res.step_logits, ref, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- loading
OFFICIAL_TINY = dict(dim=TINY["dim"], n_layer=TINY["n_layer"], n_head=TINY["n_head"], multiple_of=32,
                     vocab_size=V, num_classes=K, block_size=N, token_dropout_p=0.0, resid_dropout_p=0.0,
                     ffn_dropout_p=0.0, class_dropout_prob=0.0)


def test_loader_reads_training_checkpoints_with_a_namespace(tmp_path):
    model = tiny().float()
    args = argparse.Namespace(gpt_model="ARPG-L", vocab_size=V, num_classes=K, image_size=64, downsample_size=16)
    path = tmp_path / "0005000.pt"
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}, "optimizer": {},
                "steps": 5000, "args": args}, path)
    with pytest.raises(Exception):                                   # plain weights_only refuses the Namespace
        torch.load(path, weights_only=True)
    loaded = load_official_arpg(path, OFFICIAL_TINY)
    assert not loaded.training and loaded.config.num_tokens == N
    tokens, labels, orders = torch.randint(0, V, (2, N)), torch.tensor([1, 2]), torch.arange(N)
    torch.testing.assert_close(loaded(tokens, labels, orders)[0], model(tokens, labels, orders)[0])
    # the Namespace comes back intact (without a config, load_official_arpg builds the model from it)
    restored = load_weights(path)["args"]
    assert isinstance(restored, argparse.Namespace) and vars(restored) == vars(args)
    assert official_config_from_args(restored)["block_size"] == 16


def test_official_configs():
    cfg = arpg_config_from_official(official_config_from_args(argparse.Namespace(
        gpt_model="ARPG-XL", vocab_size=16384, num_classes=1000, image_size=384, downsample_size=16)))
    assert (cfg.dim, cfg.n_layer, cfg.n_head, cfg.num_tokens) == (1280, 36, 20, 576)
    assert dataclasses.replace(arpg_config_from_official({"dim": 1024, "n_layer": 24}), extra={}) == \
        dataclasses.replace(ARPGConfig(**FAMILY.sizes["arpg-l"].config), extra={})
    with torch.device("meta"):
        state = ARPG(ARPGConfig(**FAMILY.sizes["arpg-xxl"].config)).state_dict()
    assert infer_official_config(state) == dict(dim=1536, n_layer=48, n_head=24, vocab_size=16384,
                                                num_classes=1000, block_size=256)
    with pytest.raises(CheckpointError, match="not an official size"):
        infer_official_config(tiny().state_dict())
    with pytest.raises(CheckpointError, match="unrecognised"):
        convert_arpg_state_dict({"layers.self_dec.0.attn.wqkv.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="c2i"):
        arpg_config_from_official({**OFFICIAL_TINY, "model_type": "t2i"})


# ---------------------------------------------------------------------------- training
def test_overfits_a_batch():
    torch.manual_seed(0)
    model = ARPG(ARPGConfig(**TINY)).train()
    tokens, labels = torch.randint(0, V, (4, N)), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(80):
        _, loss = model(tokens, labels, model.draw_orders(4, g), causal=True)   # a fresh order per sample and step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - torch.log(torch.tensor(float(V))).item()) < 1e-4     # zero head: uniform at start
    # position enters only through relative RoPE angles, so memorising takes long: require a clear fall
    assert losses[-1] < 0.6 * losses[0]


def test_parity_runner_handles_other_configs():
    """Any `arpg` fixture: other widths, odd layer counts, grids, vocabularies, class counts, FFN rules,
    extra zero RoPE rows, schedules and step counts (self-consistency; values are checked by test_golden)."""
    from parity import Fixture, compare
    from parity.arpg import run as run_arpg

    official = dict(dim=48, n_layer=5, n_head=3, multiple_of=16, ffn_dim_multiplier=1.3, vocab_size=50,
                    num_classes=7, block_size=25, cls_token_num=2, token_dropout_p=0.0, resid_dropout_p=0.0,
                    ffn_dropout_p=0.0, class_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ARPG(arpg_config_from_official(official))
    assert len(model.layers.self_dec) == len(model.layers.cross_dec) == 2 and model.rope.shape[0] == 2 + 25
    runs = {f"gen{i}": {"args": dict(guidance_scale=g, cfg_schedule=c, sample_schedule=s, temperature=1.0, top_k=1,
                                     top_p=1, seq_len=25, num_iter=t)}
            for i, (g, c, s, t) in enumerate([(2.0, "linear", "cosine", 7), (1.5, "constant", "arccos", 30)])}
    tensors = {f"state.{k}": v.half() for k, v in model.state_dict().items()}
    tensors.update({"in.codes": torch.randint(0, 50, (2, 25)), "in.labels": torch.tensor([1, 7]),
                    "in.orders": torch.stack([torch.randperm(25) for _ in range(2)]),
                    "in.gen_labels": torch.tensor([0, 6, 3])})
    for name in runs:
        tensors[f"out.{name}.orders"] = torch.randperm(25) + 1
    fixture = Fixture("synthetic", "arpg", {"config": official, "generation_runs": runs}, tensors, folder=None)
    out = run_arpg(fixture)
    assert out["out.logits"].shape == (2, 25, 50) and out["out.loss"].shape == ()
    assert out["out.gen1.step_logits"].shape == (3, 25, 50) and out["out.gen1.tokens"].shape == (3, 25)
    fixture.tensors.update({k: v.reshape(1) if k == "out.loss" else v for k, v in out.items()})
    assert all(c.ok for c in compare(fixture, run_arpg(fixture)))


def test_edit_cli_inpaints_and_outpaints_on_a_larger_canvas(tmp_path):
    import numpy as np
    from PIL import Image

    import mambagen
    from mambagen.cli import main

    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    model = mambagen.create_model("arpg-tiny", vocab_size=256, num_tokens=16)
    mambagen.save_model(model, tmp_path / "pipe", tokenizer=tok)
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[8:, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = ["edit", "--model", str(tmp_path / "pipe"), "--image", str(tmp_path / "img.png"), "--num", "2"]
    assert main(base + ["--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "a.png")]) == 0
    assert main(base + ["--canvas", "6", "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "b.png").size[1] == 2 * (24 + 4)   # 6 tokens x 4 px, scale 2, padding
