"""VAR / M-VAR: cached decoding == full recomputation, per-scale attention == masked dense attention,
editing keeps the known tokens, official sizes, and training through the shared loop."""
import pytest
import torch

import mambagen
from mambagen.layers.attention import VARAttention
from mambagen.models.registry import count_params, create_model, get_spec, list_models
from mambagen.sample.scales import generate_scales, scale_masks
from mambagen.sample.config import SamplingConfig


def _pair(family, seed=0):
    torch.manual_seed(seed)
    tok = mambagen.create_tokenizer("msvq-tiny").eval()
    model = create_model(f"{family}-tiny").eval()
    with torch.no_grad():  # the near-zero gamma init would hide errors in the blocks
        for blk in model.blocks:
            blk.ada_lin[-1].weight.normal_(std=0.2)
        model.head.weight.normal_(std=0.2)
    return model.double(), tok.double()


@pytest.mark.parametrize("name", [n for n in list_models() if n.split("-")[0] in ("var", "mvar") and get_spec(n).official_params])
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
    res = generate_scales(model, tok.quantize, labels, SamplingConfig(cfg_scale=1 + 0.0, top_k=0), torch.Generator().manual_seed(0), return_logits=True)
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
    res = generate_scales(model, tok.quantize, torch.tensor([2, 3]), SamplingConfig(cfg_scale=1 + 1.0), torch.Generator().manual_seed(1), known=known, regenerate=regen)
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


def test_edit_cli_inpaints_outpaints_and_names_bad_masks(tmp_path):
    import numpy as np
    from PIL import Image

    from mambagen.cli import main

    model, tok = _pair("mvar")
    mambagen.save_model(model.float(), tmp_path / "pipe", tokenizer=tok.float())
    Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((24, 24), np.uint8)
    mask[8:16, 8:16] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(mask[:20]).save(tmp_path / "bad_mask.png")
    base = ["edit", "--model", str(tmp_path / "pipe"), "--image", str(tmp_path / "img.png"), "--num", "2"]
    assert main(base + ["--mask", str(tmp_path / "mask.png"), "--classes", "3", "--out", str(tmp_path / "a.png")]) == 0
    assert main(base + ["--mode", "outpaint", "--keep", "0.5", "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "a.png").size[0] > Image.open(tmp_path / "a.png").size[1]
    assert main(base + ["--mask", str(tmp_path / "bad_mask.png"), "--out", str(tmp_path / "c.png")]) == 2


@pytest.mark.parametrize("name, expect", [
    ("var-d16", dict(depth=16, embed_dim=1024, num_heads=16, attn_l2_norm=True, shared_aln=False, L=680)),
    ("mvar-d16", dict(depth=16, embed_dim=1024, num_heads=16, attn_l2_norm=False, shared_aln=False, L=680)),
    ("var-d36", dict(depth=36, embed_dim=2304, num_heads=36, attn_l2_norm=True, shared_aln=True, L=2240)),
])
def test_released_var_configs_are_inferred_from_the_tensors(name, expect):
    from mambagen.convert.var import infer_var_config
    with torch.device("meta"):
        state = create_model(name).state_dict()
    cfg = infer_var_config(state)
    L = expect.pop("L")
    assert {k: cfg[k] for k in expect} == expect and sum(p * p for p in cfg["patch_nums"]) == L
    assert cfg["num_classes"] == 1000


def test_convert_official_var_file_to_a_pipeline_and_sample(tmp_path):
    """A bare official state dict file + the official VQVAE file -> our pipeline, same outputs."""
    from mambagen.convert.var import load_official_var

    model, tok = _pair("var")
    model, tok = model.float(), tok.float()
    torch.save(model.state_dict(), tmp_path / "var_tiny.pth")
    official = dict(depth=2, embed_dim=32, num_heads=2, num_classes=10, attn_l2_norm=True, patch_nums=[1, 2, 3, 4],
                    flash_if_available=True, fused_if_available=True, cond_drop_rate=0.1)
    loaded = load_official_var("var", tmp_path / "var_tiny.pth", official, vocab_size=256, Cvae=8)
    ids = torch.randint(0, 256, (2, 30))
    x = tok.quantize.idx_to_var_input(list(ids.split([1, 4, 9, 16], 1)))
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(loaded(ids, labels, x)[0], model(ids, labels, x)[0])
    with pytest.raises(Exception, match="does not know.*made_up"):
        load_official_var("var", tmp_path / "var_tiny.pth", {**official, "made_up": 1}, vocab_size=256, Cvae=8)


def test_bf16_sampling_editing_and_sample_many_of_a_next_scale_pipeline(tmp_path):
    """--precision bf16 (the CUDA default): the quantizer runs with the model between scales, the
    decoder in float32."""
    import numpy as np
    from PIL import Image

    from mambagen.cli import main
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("msvq-tiny").eval()
    gen = create_model("mvar-tiny", vocab_size=tok.codebook_size, Cvae=tok.config.z_channels,
                       patch_nums=tuple(tok.patch_nums)).eval()
    d = mambagen.save_model(gen, tmp_path / "m", tokenizer=tok)
    common = ["--precision", "bf16", "--device", "cpu"]
    assert main(["sample", "--model", str(d), "--per-class", "1", "--classes", "0,1", "--out", str(tmp_path / "s.png"),
                 *common]) == 0
    assert main(["sample-many", "--model", str(d), "--per-class", "1", "--classes", "0,1", "--out", str(tmp_path / "sm"),
                 "--no-progress", *common]) == 0
    assert np.load(tmp_path / "sm" / "samples.npz")["arr_0"].shape[0] == 2
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "in.png")
    assert main(["edit", "--model", str(d), "--image", str(tmp_path / "in.png"), "--mode", "outpaint", "--num", "1",
                 "--out", str(tmp_path / "e.png"), *common]) == 0
