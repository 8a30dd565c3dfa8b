"""The parity machinery is generic: fixtures of other configs, in the official format, pass too.

We cannot run the official code here, so these fixtures are written by our own
model (exported to official key names and config fields). What this proves is
that discovery, the official-config parsing and the runners assume no shapes
from the shipped fixtures; the numbers themselves are pinned by test_golden.py.
"""
import json

import torch
from safetensors.torch import save_file

from mambagen.convert.aim import export_aim_state_dict
from mambagen.models.aim import AiM
from parity import check, discover, load_fixture
from mambagen.sample.raster import generate_raster
from mambagen.sample.config import SamplingConfig

OFFICIAL_CONFIGS = {
    "aim_ngroups2_group3": dict(d_model=48, n_layer=3, vocab_size=100, num_classes=5, num_tokens=9,
                                ssm_cfg={"layer": "Mamba2", "d_state": 8, "headdim": 12, "ngroups": 2,
                                         "chunk_size": 4, "d_conv": 3},
                                adaln_group=True, num_groups=3),
    "aim_layer_adaln_dhdim": dict(d_model=32, n_layer=2, vocab_size=64, num_classes=3, num_tokens=4,
                                  ssm_cfg={"layer": "Mamba2", "d_state": 4, "headdim": 8, "expand": 1,
                                           "D_has_hdim": True, "norm_before_gate": True, "chunk_size": 2},
                                  adaln_group=False, num_groups=1),
}


def _write_aim_fixture(folder, name, official):
    from mambagen.convert.aim import aim_config_from_official
    torch.manual_seed(len(name))
    model = AiM(aim_config_from_official(official)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p + torch.randn_like(p) * 0.3).half().float())  # fixtures store float16 weights
    cfg = model.config
    codes = torch.randint(0, cfg.vocab_size, (2, cfg.num_tokens))
    labels = torch.tensor([0, cfg.num_classes])
    gen_labels = torch.tensor([1, 2])
    with torch.no_grad():
        logits, _ = model(codes, labels)
        res = generate_raster(model, gen_labels, SamplingConfig(cfg_scale=2.5, top_k=1), return_logits=True)
    tensors = {f"state.{k}": v.half() for k, v in export_aim_state_dict(model.state_dict()).items()
               if k != "lm_head.weight"}  # released weights store the tied head once
    tensors.update({"in.codes": codes, "in.labels": labels, "in.gen_labels": gen_labels,
                    "out.logits": logits, "out.gen_tokens": res.tokens, "out.gen_step_logits": res.step_logits})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
    meta = {"kind": "aim", "config": official,
            "generate_args": {"cfg_scale": 2.5, "temperature": 1.0, "top_k": 1, "top_p": 1.0}}
    (folder / f"{name}.json").write_text(json.dumps(meta))


def test_parity_runs_on_fixtures_of_other_configs(tmp_path, monkeypatch):
    for name, official in OFFICIAL_CONFIGS.items():
        _write_aim_fixture(tmp_path, name, official)
    (tmp_path / "future_family.json").write_text(json.dumps({"kind": "not_yet_a_family"}))
    save_file({"in.x": torch.zeros(1)}, str(tmp_path / "future_family.safetensors"))
    monkeypatch.setenv("MAMBAGEN_GOLDEN_DIR", str(tmp_path))
    found = {p.stem for p in discover()}
    assert found == {*OFFICIAL_CONFIGS, "future_family"}
    for name in OFFICIAL_CONFIGS:
        checks = check(load_fixture(tmp_path / f"{name}.json"))
        assert {c.name for c in checks} == {"out.logits", "out.gen_tokens", "out.gen_step_logits"}
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert check(load_fixture(tmp_path / "future_family.json")) is None  # reported as skipped


def test_a_wrong_output_is_caught(tmp_path):
    name, official = next(iter(OFFICIAL_CONFIGS.items()))
    _write_aim_fixture(tmp_path, name, official)
    fx = load_fixture(tmp_path / f"{name}.json")
    fx.tensors["out.logits"] = fx.tensors["out.logits"] + 0.05
    fx.tensors["out.gen_tokens"][0, 0] += 1
    bad = {c.name for c in check(fx) if not c.ok}
    assert bad == {"out.logits", "out.gen_tokens"}


# every configuration the official VectorQuantizer2 accepts, in its own keywords (`Cvae`, not z_channels)
QUANT_CONFIGS = {
    "quant_shared4": dict(share_quant_resi=4),
    "quant_per_scale": dict(share_quant_resi=0),
    "quant_counts2": dict(share_quant_resi=0, default_qresi_counts=2),
    "quant_one_shared": dict(share_quant_resi=1),
    "quant_partial3": dict(share_quant_resi=3),
    "quant_znorm": dict(using_znorm=True, share_quant_resi=2),
    "quant_negative_resi": dict(quant_resi=-0.5, share_quant_resi=4),
    "quant_no_phi": dict(quant_resi=0.0, share_quant_resi=1),
}


def _write_quant_fixture(folder, name, extra):
    from mambagen.tokenizers.msvq import MultiScaleQuantizer
    from mambagen.convert.var_vqvae import msvq_config_from_official
    from parity.var_vqvae import quantizer_outputs
    official = {"vocab_size": 32, "Cvae": 8, "using_znorm": False, "beta": 0.25, "v_patch_nums": [1, 2, 3, 5],
                **extra}
    torch.manual_seed(len(name))
    quantizer = MultiScaleQuantizer(msvq_config_from_official(official)).eval()
    with torch.no_grad():
        for p in quantizer.parameters():
            p.copy_((p + torch.randn_like(p) * 0.3).half().float())
        f = torch.randn(2, 8, 5, 5)
        outputs = quantizer_outputs(quantizer, f)
    tensors = {f"state.{k}": (v.half() if v.is_floating_point() else v) for k, v in quantizer.state_dict().items()}
    tensors.update({"in.f": f, **outputs})
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"kind": "var_quant", "config": official}))
    return quantizer


def test_var_quant_fixtures_of_every_quantizer_configuration_run(tmp_path, monkeypatch):
    phi_counts = {}
    for name, extra in QUANT_CONFIGS.items():
        q = _write_quant_fixture(tmp_path, name, extra)
        phi_counts[name] = sum(".quant_resi." in f".{k}" for k in q.state_dict() if k.endswith("weight"))
    monkeypatch.setenv("MAMBAGEN_GOLDEN_DIR", str(tmp_path))
    assert {p.stem for p in discover()} == set(QUANT_CONFIGS)
    for name in QUANT_CONFIGS:
        checks = check(load_fixture(tmp_path / f"{name}.json"))
        assert checks and all(c.ok for c in checks), (name, [c for c in checks if not c.ok])
        assert {"out.idx_Bl.3", "out.fhat.3", "out.var_input", "out.next_ar.fhat.3"} <= {c.name for c in checks}
    # the layouts differ as the official ones do: per scale, counts, one shared, K shared, none
    assert (phi_counts["quant_per_scale"], phi_counts["quant_counts2"], phi_counts["quant_one_shared"],
            phi_counts["quant_partial3"], phi_counts["quant_no_phi"]) == (4, 2, 1, 3, 0)
    fx = load_fixture(tmp_path / "quant_znorm.json")
    fx.tensors["out.idx_Bl.2"] = (fx.tensors["out.idx_Bl.2"] + 1) % 32
    assert {c.name for c in check(fx) if not c.ok} >= {"out.idx_Bl.2"}
