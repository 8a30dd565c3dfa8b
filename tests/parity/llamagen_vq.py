"""Parity runner for `llamagen_vq` fixtures (official LlamaGen `VQModel`, any tiny config)."""
from __future__ import annotations

import torch

from mambagen.convert.llamagen_vq import load_official_llamagen_vq


def run(fixture) -> dict[str, torch.Tensor]:
    model = load_official_llamagen_vq(fixture.state(), fixture.meta["config"], fixture.meta.get("arch_overrides"))
    images = fixture.input("images").float()  # (B, 3, H, W)
    with torch.no_grad():
        h = model.encoder(images)  # (B, z_channels, H/f, W/f)
        z = model.quant_conv(h)  # (B, C, h, w)
        quant, ids = model.quantize(z)  # (B, C, h, w), (B, h*w)
        decoded = model.decode(ids, grid=tuple(z.shape[-2:]))  # (B, 3, H, W)
        recon, _ = model(images)
    return {
        "out.encoder_h": h,
        "out.latent_z": z,
        "out.quant": quant,
        "out.indices": ids,
        "out.decoded": decoded,
        "out.recon": recon,
    }
