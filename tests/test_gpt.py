"""LlamaGen GPT: official sizes, cached decoding == teacher forcing, GQA, static cache, loader, sampler."""
import json

import pytest
import torch
from helpers import assert_overfits_one_batch
from safetensors.torch import save_file

from mambagen.convert.gpt import (convert_gpt_state_dict, gpt_config_from_official, infer_official_config,
                                  load_official_gpt)
from mambagen.io import CheckpointError
from mambagen.models.gpt import FAMILY, GPT, GPTConfig
from parity import check, load_fixture
from mambagen.sample.raster import generate_raster
from mambagen.sample.config import SamplingConfig

TINY = FAMILY.sizes["gpt-tiny"].config


def tiny(**kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, **kw}))
    with torch.no_grad():  # the zero head would make every logit 0 and hide bugs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def decode_teacher_forced(model, codes, labels):
    """prefill + step over the known codes: the logits each position would be sampled from."""
    cache = model.allocate_cache(codes.shape[0])
    out = [model.prefill(labels, cache)]
    for i in range(codes.shape[1] - 1):
        out.append(model.step(codes[:, i], cache, i))
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", ["gpt-b", "gpt-l", "gpt-xl"])
def test_official_parameter_counts(name):
    values, official = FAMILY.sizes[name].config, FAMILY.sizes[name].official_params
    with torch.device("meta"):
        model = GPT(GPTConfig(**values))
    assert sum(p.numel() for p in model.parameters()) == official
    assert not any(k.startswith("rope") for k in model.state_dict())  # derived from the config, not saved


def test_official_init_zeroes_the_head():
    model = GPT(GPTConfig(**TINY))
    assert not model.output.weight.any() and model.tok_embeddings.weight.std() > 0.01
    _, loss = model(torch.randint(0, 256, (2, 16)), torch.tensor([0, 1]))
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 1e-5


@pytest.mark.parametrize("kw", [{}, dict(n_kv_head=2), dict(n_kv_head=1), dict(cls_token_num=3),
                                dict(cls_rope_zero=False), dict(num_tokens=9, n_head=2)])
def test_cached_decoding_equals_teacher_forcing(kw):
    model = tiny(**kw).double()
    N = model.config.num_tokens
    codes, labels = torch.randint(0, 256, (3, N)), torch.tensor([1, 7, 10])  # 10 = null class
    logits, loss = model(codes, labels)
    assert logits.shape == (3, N, 256) and loss.ndim == 0
    torch.testing.assert_close(decode_teacher_forced(model, codes, labels), logits, rtol=1e-9, atol=1e-9)


def test_prefill_with_prefix_equals_stepping():
    model = tiny(n_kv_head=2).double()
    codes, labels = torch.randint(0, 256, (2, 16)), torch.tensor([3, 4])
    logits, _ = model(codes, labels)
    cache = model.allocate_cache(2)
    nxt = model.prefill(labels, cache, prefix=codes[:, :6])
    torch.testing.assert_close(nxt, logits[:, 6], rtol=1e-9, atol=1e-9)
    for i in range(6, 15):
        torch.testing.assert_close(model.step(codes[:, i], cache, i), logits[:, i + 1], rtol=1e-9, atol=1e-9)


def test_gqa_equals_attention_with_repeated_kv_heads():
    """Official grouping: kv head j serves query heads j*g .. (j+1)*g-1 (repeat_interleave)."""
    gqa = tiny(n_kv_head=2).double()
    mha = GPT(GPTConfig(**TINY)).double().eval()
    state = dict(gqa.state_dict())
    hd, H, Hkv = gqa.config.head_dim, gqa.config.n_head, 2
    for i in range(gqa.config.n_layer):
        q, k, v = state[f"layers.{i}.attention.wqkv.weight"].split([H * hd, Hkv * hd, Hkv * hd])
        rep = [w.unflatten(0, (Hkv, hd)).repeat_interleave(H // Hkv, 0).flatten(0, 1) for w in (k, v)]
        state[f"layers.{i}.attention.wqkv.weight"] = torch.cat([q, *rep])
    mha.load_state_dict(state)
    codes, labels = torch.randint(0, 256, (2, 16)), torch.tensor([0, 5])
    torch.testing.assert_close(mha(codes, labels)[0], gqa(codes, labels)[0], rtol=1e-9, atol=1e-9)


def test_kv_cache_is_preallocated_and_fixed():
    model = tiny(n_kv_head=2)
    cache = model.allocate_cache(2)
    before = [(c.k, c.v, c.k.data_ptr(), c.v.data_ptr()) for c in cache.layers]
    assert all(c.k.shape == (2, 2, 16, 16) for c in cache.layers)  # (B, n_kv_head, num_tokens, head_dim)
    decode_teacher_forced(model, torch.randint(0, 256, (2, 16)), torch.tensor([1, 2]))
    model.prefill(torch.tensor([1, 2]), cache, prefix=torch.randint(0, 256, (2, 3)))
    for i in range(3, 15):
        model.step(torch.randint(0, 256, (2,)), cache, i)
    for c, (k, v, pk, pv) in zip(cache.layers, before):
        assert c.k is k and c.v is v and c.k.data_ptr() == pk and c.v.data_ptr() == pv
        assert c.k.shape == (2, 2, 16, 16)


def test_overfit_one_batch_loss_falls():
    torch.manual_seed(0)
    assert_overfits_one_batch(GPT(GPTConfig(**TINY)).train())


def test_cfg_sampling_is_seeded_and_keeps_prefix():
    model = tiny()
    labels = torch.tensor([0, 5])
    a = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=20, top_p=0.9, temperature=1.1), torch.Generator().manual_seed(1))
    b = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=20, top_p=0.9, temperature=1.1), torch.Generator().manual_seed(1))
    assert a.tokens.shape == (2, 16) and torch.equal(a.tokens, b.tokens)
    c = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0), torch.Generator().manual_seed(2), prefix=a.tokens[:, :5])
    assert torch.equal(c.tokens[:, :5], a.tokens[:, :5])
    greedy = generate_raster(model, labels, SamplingConfig(cfg_scale=3.0, top_k=1), return_logits=True)
    assert torch.equal(greedy.tokens, greedy.step_logits.argmax(-1))
    with pytest.raises(ValueError, match="class id 11 is out of range"):
        generate_raster(model, torch.tensor([11]), SamplingConfig())


def test_convert_cleans_and_rejects_foreign_keys():
    ours = GPT(GPTConfig(**TINY)).state_dict()
    official = {f"module._orig_mod.{k}": v for k, v in ours.items()}
    official["layers.0.attention.kv_cache.k_cache"] = torch.zeros(1)
    official["freqs_cis"] = torch.zeros(1)
    assert convert_gpt_state_dict(official).keys() == ours.keys()
    with pytest.raises(CheckpointError, match=r"unrecognised keys \['layers.0.attention.q_proj.weight'\]"):
        convert_gpt_state_dict({**ours, "layers.0.attention.q_proj.weight": torch.zeros(1)})


def test_official_config_mapping():
    cfg = gpt_config_from_official(dict(dim=64, n_layer=2, n_head=4, block_size=576, class_dropout_prob=0.0,
                                        num_classes=10, vocab_size=32, caption_dim=2048, max_seq_len=2048))
    assert cfg.num_tokens == 576 and cfg.grid == 24 and cfg.class_dropout == 0.0 and not cfg.null_class
    assert GPT(cfg).cls_embedding.embedding_table.weight.shape == (10, 64)  # no null row, as official
    with pytest.raises(CheckpointError, match="model_type 't2i'"):
        gpt_config_from_official(dict(dim=64, n_layer=2, n_head=4, model_type="t2i"))
    with pytest.raises(CheckpointError, match="unknown LlamaGen ModelArgs"):
        gpt_config_from_official(dict(dim=64, n_layer=2, n_head=4, n_heads=4))


def test_config_inferred_from_official_shapes():
    with torch.device("meta"):
        state = GPT(GPTConfig(**FAMILY.sizes["gpt-l"].config)).state_dict()
    assert infer_official_config(state) == dict(dim=1024, n_layer=24, n_head=16, n_kv_head=None, vocab_size=16384,
                                                block_size=256, num_classes=1000, class_dropout_prob=0.1)
    with torch.device("meta"):
        odd = GPT(GPTConfig(dim=1024, n_layer=3, n_head=16)).state_dict()
    with pytest.raises(CheckpointError, match="number of heads cannot be read off"):
        infer_official_config(odd)


def test_load_official_file_container(tmp_path):
    model = tiny(n_kv_head=2)
    path = tmp_path / "c2i_T_256.pt"
    torch.save({"model": model.state_dict(), "steps": 3}, path)
    config = dict(dim=64, n_layer=2, n_head=4, n_kv_head=2, multiple_of=32, vocab_size=256, num_classes=10,
                  block_size=16)
    loaded = load_official_gpt(path, config)
    codes, labels = torch.randint(0, 256, (2, 16)), torch.tensor([0, 1])
    torch.testing.assert_close(loaded(codes, labels)[0], model(codes, labels)[0])


def _reference_generation(model, labels, cfg_scale, interval):
    """Greedy CFG decoding without any cache (full forward per token), official cfg_interval rule."""
    B, N = labels.shape[0], model.config.num_tokens
    both = torch.cat([labels, torch.full_like(labels, model.config.num_classes)])
    toks, used = torch.zeros(B, N, dtype=torch.long), []
    for t in range(N):
        logits = model(torch.cat([toks, toks])[:, :t + 1], both)[0][:, t]
        cond, uncond = logits.chunk(2)
        g = uncond + (cond - uncond) * cfg_scale if interval < 0 or t <= interval + 1 else cond
        toks[:, t] = g.argmax(-1)
        used.append(g)
    return toks, torch.stack(used, 1)


@pytest.mark.parametrize("official", [
    dict(dim=48, n_layer=2, n_head=3, n_kv_head=1, multiple_of=16, vocab_size=50, num_classes=4, block_size=9,
         cls_token_num=2, token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0),
    dict(dim=32, n_layer=3, n_head=2, multiple_of=32, vocab_size=40, num_classes=3, block_size=16, rope_base=100),
])
@pytest.mark.parametrize("interval", [-1, 2])
def test_parity_runner_on_other_configs(tmp_path, official, interval):
    """The runner assumes nothing from the shipped fixture: a fixture in the official format written
    by our model (official training slice, cache-free greedy reference) passes."""
    model = GPT(gpt_config_from_official(official)).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p + torch.randn_like(p) * 0.3).half().float())
        N, k = model.config.num_tokens, model.config.cls_token_num
        codes = torch.randint(0, official["vocab_size"], (2, N))
        labels, gen_labels = torch.tensor([0, official["num_classes"]]), torch.tensor([1, 2])
        logits = model(codes, labels)[0][:, k - 1:]                    # official training-mode slice
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), codes[:, k - 1:].flatten())
        toks, used = _reference_generation(model, gen_labels, 3.0, interval)
    tensors = {f"state.{n}": v.half() for n, v in model.state_dict().items()}
    tensors.update({"in.codes": codes, "in.labels": labels, "in.gen_labels": gen_labels, "out.logits": logits,
                    "out.loss": loss.reshape(1), "out.gen_tokens": toks.int(), "out.gen_step_logits": used})
    save_file({n: v.contiguous() for n, v in tensors.items()}, str(tmp_path / "g.safetensors"))
    meta = {"kind": "gpt", "config": {**official, "model_type": "c2i", "max_batch_size": 32},
            "generate_args": {"max_new_tokens": N, "cfg_scale": 3.0, "cfg_interval": interval, "temperature": 1.0,
                              "top_k": 1, "top_p": 1.0, "sample_logits": True}}
    (tmp_path / "g.json").write_text(json.dumps(meta))
    checks = check(load_fixture(tmp_path / "g.json"))
    assert checks and all(c.ok for c in checks), checks
