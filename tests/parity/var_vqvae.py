"""Parity runners for `var_vqvae` (VAR's whole VQVAE) and `var_quant` (its quantizer alone).

Everything is derived from the fixture's official config, `arch_overrides` and tensor shapes, so
any patch_nums, Φ-sharing mode, ch_mult, vocabulary or latent width works. Outputs are computed
from our own intermediate results (ids, f_hat), not from the fixture's expected ones.
"""
from __future__ import annotations

import torch

from mambagen.convert.var_vqvae import load_official_var_quantizer, load_official_var_vqvae
from mambagen.tokenizers.msvq import MultiScaleQuantizer


def quantizer_outputs(quantizer: MultiScaleQuantizer, f_BChw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every quantizer output of the fixtures, from the latent f (B, Cvae, n, n)."""
    out: dict[str, torch.Tensor] = {}
    idx_list, fhat_list = quantizer.quantize_residual(f_BChw)  # official f_to_idxBl_or_fhat, both modes
    ms_h_BChw = [quantizer.embed_scale(idx_Bl) for idx_Bl in idx_list]  # (B, C, pn, pn) per scale
    rebuilt = quantizer.embed_to_fhat(ms_h_BChw, all_to_max_scale=True, last_one=False)
    for si in range(quantizer.num_scales):
        out[f"out.idx_Bl.{si}"] = idx_list[si]
        out[f"out.fhat.{si}"] = fhat_list[si]
        out[f"out.embed_to_fhat.{si}"] = rebuilt[si]
    out["out.var_input"] = quantizer.idx_to_var_input(idx_list)

    # the official inference helper, scale by scale from f_hat = 0
    f_hat = torch.zeros_like(fhat_list[0])
    for si, h_BChw in enumerate(ms_h_BChw):
        f_hat, next_map = quantizer.next_ar_input(si, f_hat, h_BChw)
        out[f"out.next_ar.fhat.{si}"] = f_hat
        out[f"out.next_ar.next_map.{si}"] = next_map
    return out


def run_var_vqvae(fixture) -> dict[str, torch.Tensor]:
    meta = fixture.meta
    model = load_official_var_vqvae(fixture.state(), meta["config"], meta.get("arch_overrides"))
    images = fixture.input("images").float()  # (B, 3, H, W)
    with torch.no_grad():
        f = model.encode_latent(images)  # (B, Cvae, n, n)
        out = {"out.f": f, **quantizer_outputs(model.quantize, f)}
        SN = model.quantize.num_scales
        idx_list = [out[f"out.idx_Bl.{si}"] for si in range(SN)]
        out["out.img_from_idx"] = model.decode(idx_list)
        for si, img in enumerate(model.decode_per_scale(idx_list)):
            out[f"out.img_from_idx_per_scale.{si}"] = img
        out["out.recon"] = model.fhat_to_img(out[f"out.fhat.{SN - 1}"])  # img_to_reconstructed_img(last_one)
        out["out.fhat_to_img"] = model.fhat_to_img(out[f"out.fhat.{SN - 1}"])
    return out


def run_var_quant(fixture) -> dict[str, torch.Tensor]:
    meta = fixture.meta
    quantizer = load_official_var_quantizer(fixture.state(), meta["config"], meta.get("arch_overrides"))
    with torch.no_grad():
        return quantizer_outputs(quantizer, fixture.input("f").float())


def run(fixture) -> dict[str, torch.Tensor]:
    """`var_vqvae` fixtures (the whole VQVAE) and `var_quant` fixtures (its quantizer alone)."""
    return (run_var_quant if fixture.kind == "var_quant" else run_var_vqvae)(fixture)
