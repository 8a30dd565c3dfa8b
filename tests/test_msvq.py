"""VAR multi-scale VQ tokenizer: layout, phases, consistency, Φ modes, errors, loading, training (tiny, CPU)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from mambagen.checkpoint import load_tokenizer
from mambagen.convert.var_vqvae import (convert_var_vqvae_state_dict, load_official_var_quantizer,
                                        load_official_var_vqvae, msvq_config_from_official)
from helpers import OFFICIAL_LAYOUTS, assert_official_layout, images
from mambagen.io import CheckpointError
from parity import DEFAULT_DIR, check, load_fixture
from mambagen.tokenizers.msvq import MSVQ_CONFIGS, MSVQConfig, MSVQModel, MultiScaleQuantizer, create_msvq


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only add barrier overhead
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_msvq("msvq-tiny").eval()


# ---- architecture ------------------------------------------------------------------------------

def test_msvq_f16_matches_official_layout():
    with torch.device("meta"):
        model = create_msvq("msvq-f16")
    assert_official_layout(model, OFFICIAL_LAYOUTS["msvq-f16"])
    sd = model.state_dict()
    assert not any(k.startswith(("encoder.down.3.attn", "decoder.up.3.attn", "decoder.up.0.upsample")) for k in sd)
    assert model.num_tokens == 680 and model.downsample == 16 and model.grid_size(256) == (16, 16)
    assert msvq_config_from_official() == MSVQ_CONFIGS["msvq-f16"]


# ---- phases and their consistency ----------------------------------------------------------------

def test_encode_decode_shapes_and_flat_ids(tiny):
    x = images()
    idx_list = tiny.encode(x)
    assert [tuple(i.shape) for i in idx_list] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    assert all(i.dtype == torch.int64 for i in idx_list)
    flat = tiny.encode_flat(x)
    assert flat.shape == (2, tiny.num_tokens) == (2, 30)
    assert all(torch.equal(a, b) for a, b in zip(tiny.split_flat(flat), idx_list))
    assert torch.equal(tiny.join_ids(tiny.split_flat(flat)), flat)
    assert [e - b for b, e in tiny.scale_ranges] == [1, 4, 9, 16]
    with torch.no_grad():
        img = tiny.decode(idx_list)
        assert img.shape == x.shape and img.abs().max() <= 1
        assert torch.equal(tiny.decode(flat), img)
        per_scale = tiny.decode_per_scale(flat)
        assert len(per_scale) == 4 and torch.allclose(per_scale[-1], img)
        recon, losses = tiny(x)
    assert recon.shape == x.shape and losses.entropy is None and losses.total.ndim == 0


def test_teacher_forcing_and_ar_chain_agree(tiny):
    q = tiny.quantize
    with torch.no_grad():
        f = tiny.encode_latent(images())  # (2, 8, 4, 4)
        idx_list = q.f_to_idx(f)
        fhats = q.f_to_fhat(f)
        var_input = q.idx_to_var_input(idx_list)
        assert var_input.shape == (2, tiny.num_tokens - 1, 8)
        assert torch.equal(q.idx_to_var_input(idx_list[:-1]), var_input)  # last scale's ids are not needed

        f_hat0 = torch.zeros_like(f)
        f_hat, maps = f_hat0, []
        for si, idx in enumerate(idx_list):
            f_hat, next_map = q.next_ar_input(si, f_hat, q.embed_scale(idx))
            maps.append(next_map)
        assert f_hat0.abs().max() == 0  # not updated in place
        assert torch.equal(maps[-1], f_hat)
        chained = torch.cat([m.flatten(2).transpose(1, 2) for m in maps[:-1]], dim=1)
        torch.testing.assert_close(chained, var_input, rtol=0, atol=1e-6)
        torch.testing.assert_close(f_hat, fhats[-1], rtol=0, atol=1e-6)
        rebuilt = q.embed_to_fhat([q.embed_scale(i) for i in idx_list])
        for a, b in zip(rebuilt, fhats):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert torch.equal(q.embed_to_fhat([q.embed_scale(i) for i in idx_list], last_one=True), rebuilt[-1])
        # the trainer's evaluation path gives the same ids and f_hat
        assert torch.equal(tiny.quantize_latent(f)[1], torch.cat(idx_list, 1))
        assert torch.equal(tiny.quantize_latent(f)[0], fhats[-1])


def test_training_forward_gradients_and_usage():
    torch.manual_seed(0)
    model = create_msvq("msvq-tiny").train()
    x = images()
    recon, losses = model(x)
    assert losses.usage is None and model.quantize.ema_vocab_hit_SV.abs().max() == 0  # untouched
    with torch.no_grad():
        torch.testing.assert_close(model.decode_latent(model.quantize_latent(model.encode_latent(x))[0]), recon)
    losses.total.backward()
    for name in ("quantize.embedding.weight", "quantize.quant_resi.qresi_ls.0.weight", "encoder.conv_in.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    model.zero_grad()
    recon, _ = model(x)
    recon.square().mean().backward()  # the decoder's gradient reaches the encoder (straight-through)
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    _, losses = model(x, track_usage=True)
    assert len(losses.usage_per_scale) == 4 and 0 < losses.usage <= 1
    assert model.quantize.ema_vocab_hit_SV.sum() > 0 and 0 < model.codebook_usage() <= 1


# ---- Φ sharing modes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("share, counts, resi, prefix, n_phi", [
    (0, 0, 0.5, "quantize.quant_resi.{k}.", 4),  # one Φ per scale
    (0, 2, 0.5, "quantize.quant_resi.{k}.", 2),  # default_qresi_counts Φ, spread over the scales
    (1, 0, -0.5, "quantize.quant_resi.qresi.", 1),  # one shared Φ (r = |quant_resi|)
    (2, 0, 0.5, "quantize.quant_resi.qresi_ls.{k}.", 2),
    (3, 0, 0.5, "quantize.quant_resi.qresi_ls.{k}.", 3),
    (4, 0, 0.5, "quantize.quant_resi.qresi_ls.{k}.", 4),
    (4, 0, 0.0, "", 0),  # Φ off: identities, no keys
])
def test_phi_sharing_modes(share, counts, resi, prefix, n_phi):
    torch.manual_seed(0)
    model = create_msvq("msvq-tiny", share_quant_resi=share, default_qresi_counts=counts, quant_resi=resi).eval()
    phi_keys = {k for k in model.state_dict() if ".quant_resi." in k}
    assert phi_keys == {prefix.format(k=k) + p for k in range(n_phi) for p in ("weight", "bias")}
    with torch.no_grad():
        ids = model.encode_flat(images())
        assert model.decode(ids).shape == (2, 3, 16, 16)
        _, losses = model(images())
    assert torch.isfinite(losses.total)


def test_phi_selection_follows_official_ticks():
    # numpy's argmin over |ticks - s/(S-1)|, float rounding included (scale 2 of 10 is a near-tie)
    q = MultiScaleQuantizer(MSVQConfig(vocab_size=8, ch=32))  # 10 scales, 4 partially shared Φ
    assert [q.quant_resi.index_at(si / 9) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    q6 = MultiScaleQuantizer(MSVQConfig.from_dict({**MSVQ_CONFIGS["msvq-tiny"].to_dict(),
                                                   "share_quant_resi": 0, "default_qresi_counts": 6}))
    assert [q6.quant_resi.index_at(si / 3) for si in range(4)] == [0, 1, 3, 5]  # K != 4: 1/(2K) ticks


# ---- errors -----------------------------------------------------------------------------------------------

def test_clear_errors(tiny):
    with pytest.raises(ValueError, match="16x16"):
        tiny.encode(images(size=8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode(torch.zeros(2, 16, 16))
    ids = tiny.encode(images())
    with pytest.raises(ValueError, match="out of range"):
        tiny.decode([ids[0], ids[1], ids[2], ids[3] + 256])
    with pytest.raises(ValueError, match="list of 4"):
        tiny.decode(ids[:3])
    with pytest.raises(ValueError, match=r"\(2, 9\)"):
        tiny.decode([ids[0], ids[1], ids[3], ids[3]])
    with pytest.raises(ValueError, match="integer"):
        tiny.decode([i.float() for i in ids])
    with pytest.raises(ValueError, match=r"\(B, 30\)"):
        tiny.decode(torch.zeros(2, 29, dtype=torch.long))
    with pytest.raises(ValueError, match="scale index"):
        tiny.quantize.next_ar_input(4, torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match="image_size"):
        MSVQConfig(patch_nums=(1, 2, 8))
    with pytest.raises(ValueError, match="at least 2 scales"):
        MSVQConfig(patch_nums=(16,))
    with pytest.raises(ValueError, match="multiple of 32"):
        MSVQConfig(ch=48)
    with pytest.raises(ValueError, match="unknown multi-scale tokenizer"):
        create_msvq("msvq-f32")


# ---- loading ------------------------------------------------------------------------------------------------

OFFICIAL_TINY = dict(vocab_size=256, z_channels=8, ch=32, dropout=0.0, beta=0.25, using_znorm=False, quant_conv_ks=3,
                     quant_resi=0.5, share_quant_resi=4, default_qresi_counts=0, v_patch_nums=[1, 2, 3, 4],
                     test_mode=True)
ARCH = {"ch_mult": [1, 1, 2], "num_res_blocks": 1}


def test_official_loader_round_trip_and_errors(tiny):
    state = dict(tiny.state_dict())
    model = load_official_var_vqvae(state, OFFICIAL_TINY, ARCH)
    assert model.config == tiny.config and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model.decode(tiny.encode(images())), tiny.decode(tiny.encode(images())))
    # a usage buffer for another number of scales is replaced by zeros (official load_state_dict)
    other = {**state, "quantize.ema_vocab_hit_SV": torch.ones(10, 256)}
    assert convert_var_vqvae_state_dict(other, tiny.config)["quantize.ema_vocab_hit_SV"].shape == (4, 256)
    missing = {k: v for k, v in state.items() if k != "decoder.up.1.block.0.conv2.weight"}
    with pytest.raises(CheckpointError, match=r"decoder\.up\.1\.block\.0\.conv2\.weight"):
        load_official_var_vqvae(missing, OFFICIAL_TINY, ARCH)
    with pytest.raises(ValueError, match="unknown official VQVAE argument"):
        msvq_config_from_official({**OFFICIAL_TINY, "n_embed": 3})
    q = load_official_var_quantizer({k: v for k, v in state.items() if k.startswith("quantize.")
                                     and not k.endswith("ema_vocab_hit_SV")}, OFFICIAL_TINY, ARCH)
    assert torch.equal(q.embedding.weight, tiny.quantize.embedding.weight)


def test_var_quant_fixture_from_the_var_vqvae_fixture(tmp_path):
    """A `var_quant` fixture (quantizer state + in.f) made of the var_vqvae fixture's tensors passes."""
    src = load_fixture(DEFAULT_DIR / "var_vqvae.json")
    tensors = {"in.f": src.tensors["out.f"]}
    for k, v in src.tensors.items():
        if k.startswith("state.quantize."):
            tensors["state." + k[len("state.quantize."):]] = v
        elif k.startswith(("out.idx_Bl.", "out.fhat.", "out.embed_to_fhat.", "out.var_input", "out.next_ar.")):
            tensors[k] = v
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "var_quant.safetensors"))
    meta = {"kind": "var_quant", "config": src.meta["config"], "arch_overrides": src.meta["arch_overrides"]}
    (tmp_path / "var_quant.json").write_text(json.dumps(meta))
    checks = check(load_fixture(tmp_path / "var_quant.json"))
    assert len(checks) == 21 and all(c.ok for c in checks), [c for c in checks if not c.ok]


OTHER_CONFIGS = [  # official VQVAE keywords + arch_overrides of other legal configs
    ({**OFFICIAL_TINY, "share_quant_resi": 0, "default_qresi_counts": 3, "v_patch_nums": [1, 2, 4]},
     {"ch_mult": [1, 2]}),
    ({**OFFICIAL_TINY, "share_quant_resi": 1, "using_znorm": True, "quant_resi": -0.3, "quant_conv_ks": 1,
      "vocab_size": 64, "z_channels": 4, "v_patch_nums": [1, 3, 5, 8]}, {"ch_mult": [1, 1, 1, 2]}),
    ({**OFFICIAL_TINY, "share_quant_resi": 2, "quant_resi": 0.0, "ch": 64, "v_patch_nums": [2, 4]}, {"ch_mult": [1, 1]}),
]


@pytest.mark.parametrize("official, arch", OTHER_CONFIGS)
def test_parity_runners_take_any_config(tmp_path, official, arch):
    """Fixtures of other configs in the official format (written from our model: this proves the runners
    derive every shape from config + arch_overrides; the numbers are pinned by the golden fixtures)."""
    config = msvq_config_from_official(official, arch)
    torch.manual_seed(1)
    model = MSVQModel(config).eval()
    x = images(size=config.image_size)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())  # fixtures store float16 weights
        ids = model.encode(x)
        q = model.quantize
        expected = {"out.f": model.encode_latent(x), "out.var_input": q.idx_to_var_input(ids),
                    "out.img_from_idx": model.decode(ids), "out.recon": model.decode(ids)}
        expected.update({f"out.idx_Bl.{si}": i for si, i in enumerate(ids)})
        expected.update({f"out.fhat.{si}": v for si, v in enumerate(q.idx_to_fhat(ids))})
    tensors = {**{f"state.{k}": v.half() for k, v in model.state_dict().items()}, "in.images": x, **expected}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "vae.safetensors"))
    (tmp_path / "vae.json").write_text(json.dumps({"kind": "var_vqvae", "config": official, "arch_overrides": arch}))
    checks = check(load_fixture(tmp_path / "vae.json"))
    assert len(checks) == len(expected) and all(c.ok for c in checks), [c for c in checks if not c.ok]


# ---- stage-1 training -------------------------------------------------------------------------------------------

class _Squares(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.items = [((torch.rand(3, 16, 16, generator=g) > 0.5).float() * 2 - 1, i % 2) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_train_tokenizer_msvq_tiny(tmp_path):
    import mambagen.train.tokenizer as tt
    cfg = tt.TokenizerTrainConfig(data="-", out=str(tmp_path / "run"), tokenizer="msvq-tiny", image_size=16,
                                  batch_size=4, steps=3, lr=1e-3, log_every=1, eval_every=3, ckpt_every=3,
                                  eval_images=4, grid_images=2, num_workers=0, progress=False, device="cpu")
    path = tt.train_tokenizer(cfg, _Squares(), _Squares(4))
    tok = load_tokenizer(path)
    assert isinstance(tok, MSVQModel) and tok.config == MSVQ_CONFIGS["msvq-tiny"]
    assert tok.encode_flat(images()).shape == (2, 30)
