"""AiM: cached decoding == parallel forward, conditioning variants, official loader, sampler."""
import pytest
import torch
from helpers import assert_overfits_one_batch

from mambagen.convert.aim import convert_aim_state_dict
from mambagen.io import CheckpointError
from mambagen.models.registry import count_params, create_model, get_spec, list_models
from mambagen.sample.logits import sample_logits, top_k_top_p_filter
from mambagen.sample.raster import generate_raster
from mambagen.sample.config import SamplingConfig


def tiny(**kw):
    torch.manual_seed(0)
    m = create_model("aim-tiny", **kw)
    with torch.no_grad():  # adaLN-Zero init would hide bugs in the conditioning paths
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.mark.parametrize("name", ["aim-b", "aim-l", "aim-xl", "aim-1b"])
def test_official_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == get_spec(name).official_params


@pytest.mark.parametrize("kw", [dict(adaln="layer"), dict(adaln="group", adaln_groups=1),
                                dict(adaln="group", adaln_groups=4), dict(position_embedding=False)])
@pytest.mark.parametrize("form", ["state", "history"])   # "auto" on a CPU: the history
def test_cached_decoding_equals_teacher_forcing(kw, form):
    model = tiny(**kw).double()
    codes = torch.randint(0, 256, (3, 16))
    labels = torch.tensor([1, 7, 10])  # 10 = null class
    logits, loss = model(codes, labels)
    assert logits.shape == (3, 16, 256) and loss.ndim == 0
    cache = model.allocate_cache(3, ssm_form=form)
    step = [model.prefill(labels, cache)]
    for i in range(15):
        step.append(model.step(codes[:, i], cache, i))
    torch.testing.assert_close(torch.stack(step, 1), logits, rtol=1e-9, atol=1e-9)


def test_prefill_with_prefix_equals_stepping():
    model = tiny().double()
    codes, labels = torch.randint(0, 256, (2, 16)), torch.tensor([3, 4])
    logits, _ = model(codes, labels)
    cache = model.allocate_cache(2)
    nxt = model.prefill(labels, cache, prefix=codes[:, :6])
    torch.testing.assert_close(nxt, logits[:, 6], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.step(codes[:, 6], cache, 6), logits[:, 7], rtol=1e-9, atol=1e-9)


def test_adaln_group_uses_layer_modulo_groups():
    model = tiny(adaln="group", adaln_groups=2)
    c, mods, _ = model.condition(torch.tensor([1]))
    group = model.ada_group(c)
    for i, blk in enumerate(model.blocks):
        torch.testing.assert_close(mods[i], blk.ada_table + group[:, i % 2])


def test_sampling_is_seeded_and_prefix_is_kept():
    model = tiny()
    labels = torch.tensor([0, 5])
    a = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=50), torch.Generator().manual_seed(1))
    b = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0, top_k=50), torch.Generator().manual_seed(1))
    assert torch.equal(a.tokens, b.tokens)
    prefix = a.tokens[:, :5]
    c = generate_raster(model, labels, SamplingConfig(cfg_scale=2.0), torch.Generator().manual_seed(2), prefix=prefix)
    assert torch.equal(c.tokens[:, :5], prefix)


def test_greedy_cfg_picks_argmax_of_guided_logits():
    model = tiny()
    res = generate_raster(model, torch.tensor([2]), SamplingConfig(cfg_scale=3.0, top_k=1), return_logits=True)
    assert torch.equal(res.tokens, res.step_logits.argmax(-1))


def test_bad_class_id_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="class id 11 is out of range"):
        generate_raster(model, torch.tensor([11]), SamplingConfig())


def test_overfit_one_batch_loss_falls():
    torch.manual_seed(0)
    assert_overfits_one_batch(create_model("aim-tiny").train())


def test_top_k_top_p_filter():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(top_k_top_p_filter(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(top_k_top_p_filter(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(top_k_top_p_filter(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    draws = sample_logits(logits.expand(2000, 4), top_p=0.7, rng=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}


def test_official_state_dict_conversion_ties_head_and_names_problems():
    official = {
        "backbone.embeddings.word_embeddings.weight": torch.zeros(4, 2),
        "backbone.layers.0.mixer.A_log": torch.zeros(1),
    }
    ours = convert_aim_state_dict(official)
    assert ours["head.weight"] is ours["tok_emb.weight"] and "blocks.0.mixer.A_log" in ours
    with pytest.raises(CheckpointError, match="unrecognised keys.*blocks.0.attn"):
        convert_aim_state_dict({**official, "blocks.0.attn.weight": torch.zeros(1)})


def test_registry_lists_aim_sizes():
    assert {"aim-b", "aim-l", "aim-xl", "aim-1b", "aim-tiny"} <= set(list_models("aim"))
    with pytest.raises(KeyError, match="unknown model 'aim-xxl'"):
        create_model("aim-xxl")
