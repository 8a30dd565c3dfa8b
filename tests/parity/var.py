"""Parity runner for `var` and `mvar` fixtures: teacher-forced logits, greedy per-scale decoding."""
from __future__ import annotations

import torch

from mambagen.convert.var import load_official_var
from mambagen.sample.config import SamplingConfig
from mambagen.sample.scales import generate_scales


def _vae_parts(fixture):
    """(quantizer, full VQVAE or None) for the fixture's VAE: the sibling var_vqvae fixture when
    present (config + all weights), else the quantizer tensors repeated under aux.vae.quantize.*."""
    from mambagen.convert.var_vqvae import load_official_var_quantizer, load_official_var_vqvae

    name = fixture.meta.get("vae_fixture")
    if name and (fixture.folder / f"{name}.json").exists():
        sib = fixture.sibling(name)
        vae = load_official_var_vqvae(sib.state(), sib.meta["config"], sib.meta.get("arch_overrides"))
        return vae.quantize, vae
    aux = fixture.state("aux.vae.quantize.")
    vq_cfg = dict(fixture.meta.get("vae_config") or {})
    vq_cfg.setdefault("v_patch_nums", fixture.meta["config"].get("patch_nums"))
    vq_cfg.setdefault("vocab_size", aux["embedding.weight"].shape[0])
    vq_cfg.setdefault("z_channels", aux["embedding.weight"].shape[1])
    if "quant_resi.qresi.weight" in aux:
        vq_cfg.setdefault("share_quant_resi", 1)
    elif any(k.startswith("quant_resi.qresi_ls.") for k in aux):
        vq_cfg.setdefault("share_quant_resi", len({k.split(".")[2] for k in aux if k.startswith("quant_resi.qresi_ls.")}))
    else:
        vq_cfg.setdefault("share_quant_resi", 0)
    return load_official_var_quantizer(aux, vq_cfg), None


def run(fixture) -> dict[str, torch.Tensor]:
    quantizer, vae = _vae_parts(fixture)
    V, Cvae = quantizer.embedding.weight.shape
    model = load_official_var(fixture.kind, fixture.state(), fixture.meta["config"], vocab_size=V, Cvae=Cvae)
    gt = torch.cat(fixture.list("in.gt_idx"), dim=1)
    logits, _ = model(gt, fixture.input("labels"), fixture.input("x_BLCv_wo_first_l"))
    out = {"out.logits": logits}
    if "in.gen_labels" in fixture.tensors:
        args = fixture.meta.get("generate_args", {})
        top_p = args.get("top_p", 0.0)
        # the official `cfg` is t at the last scale: our guidance scale is 1 + cfg
        sampling = SamplingConfig(cfg_scale=1 + args.get("cfg", 1.5), top_k=args.get("top_k", 0),
                                  top_p=top_p if 0 < top_p <= 1 else 1.0, more_smooth=args.get("more_smooth", False))
        res = generate_scales(model, quantizer, fixture.input("gen_labels"), sampling,
                              torch.Generator().manual_seed(args.get("g_seed", 0)), return_logits=True)
        for si, (idx, lg) in enumerate(zip(res.indices, res.logits)):
            out[f"out.gen.idx.{si}"] = idx
            out[f"out.gen.logits.{si}"] = lg
        out["out.gen.f_hat"] = res.f_hat
        if vae is not None:
            out["out.gen.img"] = (vae.fhat_to_img(res.f_hat) + 1) / 2
    return out
