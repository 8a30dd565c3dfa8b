"""LlamaGen VQ tokenizer: architecture, API, validation and loading (tiny, CPU)."""
import argparse

import pytest
import torch

from mambagen.convert.llamagen_vq import (convert_llamagen_vq_state_dict, load_official_llamagen_vq,
                                          vq_config_from_official)
from helpers import OFFICIAL_LAYOUTS, assert_official_layout, images
from mambagen.io import CheckpointError
from mambagen.tokenizers.vq import VQ_CONFIGS, VQConfig, VQLosses, create_tokenizer, list_tokenizers


class NotAllowed:  # a pickled class outside the loader's allow-list
    def __init__(self):
        self.payload = 1


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_tokenizer("vq-tiny").eval()


# ---- architecture ------------------------------------------------------------------------------

def test_vq_f16_matches_official_layout():
    with torch.device("meta"):
        model = create_tokenizer("vq-f16")
    assert_official_layout(model, OFFICIAL_LAYOUTS["vq-f16"])
    sd = model.state_dict()
    assert sd["quantize.codebook_used"].dtype == torch.float32
    # attention only at the lowest resolution, resampling everywhere else
    assert not any(k.startswith(("encoder.conv_blocks.3.attn", "decoder.conv_blocks.1.attn")) for k in sd)
    assert not any(k.startswith(("encoder.conv_blocks.4.downsample", "decoder.conv_blocks.4.upsample")) for k in sd)


def test_config_roundtrip_and_validation():
    cfg = VQ_CONFIGS["vq-f8-small"]
    d = cfg.to_dict()
    assert d["encoder_ch_mult"] == [1, 1, 2, 2]
    assert VQConfig.from_dict(d) == cfg and cfg.downsample == 8
    assert VQConfig().downsample == 16
    with pytest.raises(ValueError, match="unknown VQConfig field.*bogus"):
        VQConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="ch must be a multiple of 32"):
        VQConfig(ch=48)
    with pytest.raises(ValueError, match="same length"):
        VQConfig(encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="image_size"):
        VQConfig(image_size=100)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        create_tokenizer("vq-f32")
    assert {"vq-f16", "vq-tiny", "vq-f8-small"} <= set(list_tokenizers())
    assert create_tokenizer("vq-tiny", codebook_size=64).codebook_size == 64


# ---- API ---------------------------------------------------------------------------------------

def test_encode_decode_shapes(tiny):
    x = images(b=2, size=16)
    ids = tiny.encode(x)
    assert ids.shape == (2, 16) and ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < tiny.codebook_size
    assert tiny.grid_size(16) == (4, 4) and tiny.grid_size((16, 8)) == (4, 2)
    with torch.no_grad():
        assert tiny.decode(ids).shape == (2, 3, 16, 16)
        # non-square grid
        rect = tiny.encode(images(b=1, size=16)[..., :8])
        assert tiny.decode(rect, grid=(4, 2)).shape == (1, 3, 16, 8)
        # decode(ids) is decode_latent of the quantised latent
        quant, ids2 = tiny.quantize(tiny.encode_latent(x))
        assert torch.equal(ids, ids2)
        torch.testing.assert_close(tiny.decode(ids), tiny.decode_latent(quant))


def test_quantizing_code_vectors_returns_their_ids(tiny):
    ids = torch.randint(0, tiny.codebook_size, (3, 16), generator=torch.Generator().manual_seed(1))
    codes = tiny.embed_codes(ids)  # (3, 16, C)
    assert torch.allclose(codes.norm(dim=-1), torch.ones(()))  # normalised rows
    z = codes.view(3, 4, 4, -1).permute(0, 3, 1, 2)
    with torch.no_grad():
        quant, back = tiny.quantize(z)
    assert torch.equal(back, ids)
    torch.testing.assert_close(quant, z)


def test_forward_straight_through_and_losses():
    torch.manual_seed(0)
    model = create_tokenizer("vq-tiny", entropy_loss_ratio=0.1)
    recon, losses = model(images(b=2, size=16))
    assert recon.shape == (2, 3, 16, 16) and isinstance(losses, VQLosses)
    assert losses.entropy is not None and torch.isfinite(losses.entropy)
    assert losses.usage is None
    # the reconstruction loss alone must reach the encoder through the straight-through estimator
    recon.square().mean().backward(retain_graph=True)
    grad = model.encoder.conv_in.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad is None
    # the codebook loss trains the codebook
    losses.total.backward()
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_usage_buffer_only_updates_on_request():
    torch.manual_seed(0)
    model = create_tokenizer("vq-tiny")
    before = model.quantize.codebook_used.clone()
    with torch.no_grad():
        model(images())
        assert torch.equal(model.quantize.codebook_used, before)
        _, losses = model(images(), track_usage=True)
    ids = model.encode(images())
    assert torch.equal(model.quantize.codebook_used[-ids.numel():].long(), ids.flatten())
    assert losses.usage == model.codebook_usage() > 0
    no_usage = create_tokenizer("vq-tiny", codebook_show_usage=False)
    assert "quantize.codebook_used" not in no_usage.state_dict()
    with pytest.raises(ValueError, match="no usage buffer"):
        no_usage(images(), track_usage=True)


def test_clear_errors(tiny):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 4"):
        tiny.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match="out of range"):
        tiny.decode(torch.full((1, 16), tiny.codebook_size))
    with pytest.raises(ValueError, match="out of range"):
        tiny.decode(torch.full((1, 16), -1))
    with pytest.raises(ValueError, match="integer"):
        tiny.decode(torch.zeros(1, 16))
    with pytest.raises(ValueError, match="needs 16 code ids"):
        tiny.decode(torch.zeros(1, 12, dtype=torch.long), grid=(4, 4))
    with pytest.raises(ValueError, match="square"):
        tiny.decode(torch.zeros(1, 12, dtype=torch.long))


# ---- loading -----------------------------------------------------------------------------------

TINY_OFFICIAL = {"codebook_size": 256, "codebook_embed_dim": 8, "encoder_ch_mult": [1, 1, 2],
                 "decoder_ch_mult": [1, 1, 2], "z_channels": 32}
TINY_ARCH = {"ch": 32, "num_res_blocks": 1}


def test_config_from_official_names():
    cfg = vq_config_from_official(TINY_OFFICIAL, TINY_ARCH)
    assert cfg == VQConfig.from_dict({**TINY_OFFICIAL, **TINY_ARCH})
    assert vq_config_from_official() == VQ_CONFIGS["vq-f16"]
    # AiM's stage-1 config names; its `ch` is not used by the official model
    aim = vq_config_from_official({"n_embed": 16384, "embed_dim": 8, "ch_mult": [1, 1, 2, 2, 4], "ch": (128,),
                                   "num_res_blocks": 2, "z_channels": 256, "attn_resolutions": [16]})
    assert aim == VQ_CONFIGS["vq-f16"]
    with pytest.raises(ValueError, match="unknown official VQ config key.*n_codes"):
        vq_config_from_official({"n_codes": 3})


def test_convert_prefix_buffer_and_missing_key(tiny):
    cfg = tiny.config
    state = {f"vqvae.{k}": v for k, v in tiny.state_dict().items() if k != "quantize.codebook_used"}
    state["mamba.backbone.norm_f.weight"] = torch.ones(4)
    out = convert_llamagen_vq_state_dict(state, cfg)
    assert set(out) == set(tiny.state_dict())
    assert torch.equal(out["quantize.codebook_used"], torch.zeros(65536))
    del out["encoder.mid.1.q.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys.*encoder\.mid\.1\.q\.weight"):
        convert_llamagen_vq_state_dict(out, cfg)
    with pytest.raises(CheckpointError, match=r"missing keys.*encoder\.mid\.1\.q\.weight"):
        load_official_llamagen_vq(out, TINY_OFFICIAL, TINY_ARCH)


def test_load_pt_files(tiny, tmp_path):
    good = tmp_path / "vq.pt"
    torch.save({"model": tiny.state_dict(), "args": argparse.Namespace(vq_model="VQ-16")}, good)
    model = load_official_llamagen_vq(good, TINY_OFFICIAL, TINY_ARCH)
    assert not model.training
    x = images()
    assert torch.equal(model.encode(x), tiny.encode(x))

    bad = tmp_path / "evil.pt"
    torch.save({"model": tiny.state_dict(), "extra": NotAllowed()}, bad)
    with pytest.raises(CheckpointError, match="allow-list"):
        load_official_llamagen_vq(bad, TINY_OFFICIAL, TINY_ARCH)
