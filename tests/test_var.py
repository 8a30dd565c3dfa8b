"""VAR / M-VAR: cached decoding == full recomputation, per-scale attention == masked dense attention,
editing keeps the known tokens, official sizes, and training through the shared loop."""
import pytest
import torch

import mambagen
from mambagen.layers.attention import VARAttention
from mambagen.models.registry import count_params, create_model, get_spec, list_models
from mambagen.sample.scales import generate_scales, scale_masks


def _pair(family, seed=0):
    torch.manual_seed(seed)
    tok = mambagen.create_tokenizer("msvq-tiny").eval()
    model = create_model(f"{family}-tiny").eval()
    with torch.no_grad():  # the near-zero gamma init would hide errors in the blocks
        for blk in model.blocks:
            blk.ada_lin[-1].weight.normal_(std=0.2)
        model.head.weight.normal_(std=0.2)
    return model.double(), tok.double()


@pytest.mark.parametrize("name", [n for n in list_models() if n.split("-")[0] in ("var", "mvar") and "tiny" not in n])
def test_official_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == get_spec(name).official_params


@pytest.mark.parametrize("family", ["var", "mvar"])
def test_scale_by_scale_decoding_equals_full_recomputation(family):
    """M-VAR carries each block's Mamba2 state from scale to scale (VAR: a KV cache); the official code
    recomputes the whole prefix. The logits of every scale must equal a full forward over the result."""
    model, tok = _pair(family)
    labels = torch.tensor([1, 4, 10])
    res = generate_scales(model, tok.quantize, labels, cfg=0.0, top_k=0, return_logits=True,
                          generator=torch.Generator().manual_seed(0))
    ids = torch.cat(res.indices, dim=1)
    x_BLCv = tok.quantize.idx_to_var_input(res.indices)
    logits, _ = model(ids, labels, x_BLCv)
    torch.testing.assert_close(torch.cat(res.logits, dim=1), logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.f_hat, tok.quantize.idx_to_fhat(res.indices, last_one=True), rtol=1e-9, atol=1e-9)


def test_per_scale_attention_equals_block_diagonal_masked_attention():
    torch.manual_seed(0)
    attn = VARAttention(32, 4, attn_l2_norm=False).double()
    seg = [1, 4, 9, 16]
    x = torch.randn(2, sum(seg), 32, dtype=torch.float64)
    ids = torch.cat([torch.full((n,), i) for i, n in enumerate(seg)])
    dense = attn(x, mask=ids[:, None] == ids[None])
    torch.testing.assert_close(attn.forward_segments(x, seg), dense, rtol=1e-10, atol=1e-10)


def test_inpainting_keeps_every_known_token():
    model, tok = _pair("mvar")
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    known = tok.encode(images)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:12, 4:12] = True                           # regenerate the centre
    regen = scale_masks(region, model.config.patch_nums)
    res = generate_scales(model, tok.quantize, torch.tensor([2, 3]), cfg=1.0, known=known, regenerate=regen,
                          generator=torch.Generator().manual_seed(1))
    for si, (got, ref, r) in enumerate(zip(res.indices, known, regen)):
        assert torch.equal(got[:, ~r], ref[:, ~r]), si
    assert not regen[-1].all() and regen[-1].any()


def test_next_scale_training_through_the_shared_loop(tmp_path):
    from mambagen.data.tokens import tokenize_dataset
    from mambagen.train.loop import TrainConfig, train

    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("msvq-tiny")
    mambagen.save_tokenizer(tok, tmp_path / "tok")
    images = [(torch.rand(3, 16, 16) * 2 - 1, i % 2) for i in range(8)]
    tokenize_dataset(tok, images, tmp_path / "ids", batch_size=4, progress=False)
    for family in ("var", "mvar"):
        final = train(TrainConfig(data=str(tmp_path / "ids"), val_data=str(tmp_path / "ids"),
                                  tokenizer=str(tmp_path / "tok"), out=str(tmp_path / family), model=f"{family}-tiny",
                                  steps=3, batch_size=4, ckpt_every=3, eval_every=3, device="cpu", progress=False))
        pipe = mambagen.load(final)
        assert type(pipe.generator).__name__ == family.upper() and pipe.generator.config.num_classes >= 2
    with pytest.raises(ValueError, match="needs --tokenizer"):
        train(TrainConfig(data=str(tmp_path / "ids"), out=str(tmp_path / "x"), model="var-tiny", steps=1,
                          batch_size=4, device="cpu", progress=False))
