"""Metrics of one model on held-out data: a generator's bits per token, a tokenizer's reconstructions.

    heldout_bits_per_token(model, data, ...)     mean cross-entropy of a tokenized split, in bits/token
    heldout_bits_per_class(model, data, ...)     the same, class by class
    tokenizer_metrics(tokenizer, images, ...)    PSNR, SSIM, codebook usage (+ the reconstructions, for rFID)
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from ..metrics import codebook_usage, psnr, ssim
from ..tokenizers import decode_ids, encode_ids


def check_fits(model, data) -> None:
    """The generator must model the split's vocabulary, sequence length and classes."""
    c = model.config
    if (c.vocab_size, c.num_tokens) != (data.vocab_size, data.num_tokens) or c.num_classes < data.num_classes:
        raise ValueError(f"the model (vocab {c.vocab_size}, {c.num_tokens} tokens, {c.num_classes} classes) does not "
                         f"fit the token data (vocab {data.vocab_size}, {data.num_tokens} tokens, "
                         f"{data.num_classes} classes): tokenized with another tokenizer?")


def _evaluation(model, data, info, quantizer, precision):
    """(autocast, quantizer) of a held-out evaluation, the model's fit to the split checked."""
    from ..models.registry import family_of
    check_fits(model, data)
    family = family_of(model)
    if family.needs_quantizer and quantizer is None:
        raise ValueError(f"{family.name} needs its tokenizer's quantizer for teacher forcing: pass the "
                         "multi-scale tokenizer (--tokenizer DIR, or a model directory that includes it)")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(info.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def heldout_bits_per_token(model, data, info, *, batch_size: int = 64, quantizer=None,
                           precision: str = "fp32") -> float:
    """Bits per token of `data` (a TokenDataset) under `model`, with every rank of `info` sharing the work.

    Next-scale models (VAR, M-VAR) need `quantizer`, their VAE's, for the teacher-forcing input.
    Reuses the training loop's evaluation, so the number is the one training logs as val bits/token.
    """
    from ..train.loop import evaluate_bits_per_token
    autocast = _evaluation(model, data, info, quantizer, precision)
    return evaluate_bits_per_token(model, data, batch_size, info, autocast, quantizer)


def heldout_bits_per_class(model, data, info, *, batch_size: int = 64, quantizer=None,
                           precision: str = "fp32") -> tuple[dict[str, float], float, int]:
    """({class name (or id): bits per token of its sequences}, bits per token of them all, sequences
    scored), in one pass over the split, class by class. The plain mean of the classes weighs every class
    alike, where the whole weighs the split's mix: a model trained with class-balanced draws trades one
    for the other. Under several ranks each class's remainder (len % world) is left out."""
    from ..train.loop import evaluate_nats
    autocast = _evaluation(model, data, info, quantizer, precision)
    names = list(data.classes) or [str(c) for c in range(data.num_classes)]
    per_class, total, count = {}, 0.0, 0
    for c in range(data.num_classes):
        members = (data.labels == c).nonzero().flatten()
        if len(members) >= info.world:     # every rank needs one
            nats, n = evaluate_nats(model, data, batch_size, info, autocast, quantizer, members)
            per_class[names[c]] = nats / n / math.log(2)
            total, count = total + nats, count + n
    return per_class, total / count / math.log(2), count


@torch.no_grad()
def tokenizer_metrics(tokenizer, images: np.ndarray, *, batch_size: int = 32, device="cpu",
                      progress: bool = True) -> tuple[dict, np.ndarray]:
    """Reconstruct uint8 (N, H, W, 3) images -> (metrics, reconstructions uint8 (N, H, W, 3)).

    PSNR and SSIM are measured on 8-bit images (reconstructions rounded as they would be saved),
    per image, then averaged; codebook usage is the share of codes used at least once over the set.
    """
    from tqdm.auto import tqdm

    from ..images import to_uint8

    tokenizer = tokenizer.to(device).eval()
    recons, psnrs, ssims, ids = [], [], [], []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc="reconstructing", unit="batch", disable=not progress):
        real_u8 = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size]))
        x = real_u8.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1              # (b, 3, H, W) in [-1, 1]
        codes = encode_ids(tokenizer, x)                                             # (b, N)
        rec_u8 = torch.from_numpy(to_uint8(decode_ids(tokenizer, codes)))
        a, b = real_u8.permute(0, 3, 1, 2).float(), rec_u8.permute(0, 3, 1, 2).float()
        psnrs.append(psnr(a, b, data_range=255.0))
        ssims.append(ssim(a, b, data_range=255.0))
        ids.append(codes.cpu())
        recons.append(rec_u8.numpy())
    p, q = torch.cat(psnrs), torch.cat(ssims)
    finite = p[torch.isfinite(p)]
    metrics = {"n": len(images), "psnr": finite.mean().item() if len(finite) else float("inf"),
               "psnr_std": finite.std().item() if len(finite) > 1 else 0.0, "perfect": int((~torch.isfinite(p)).sum()),
               "ssim": q.mean().item(), "ssim_std": q.std().item() if len(q) > 1 else 0.0,
               "codebook_usage": codebook_usage(torch.cat(ids), tokenizer.codebook_size),
               "codebook_size": tokenizer.codebook_size}
    return metrics, np.concatenate(recons)
