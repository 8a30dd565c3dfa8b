"""AdamW with weight-decay groups and the linear learning-rate scaling rule (the schedule: `plumbing.lr_at`)."""
from __future__ import annotations

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices decay (Linear/Conv weights, embeddings, adaLN tables); vectors do not (biases, norm
    gains), nor parameters flagged `_no_weight_decay` (Mamba2's A_log, D, dt_bias)."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:   # tied weights once
            continue
        seen.add(id(p))
        (no_decay if p.dim() < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.05) -> torch.optim.AdamW:
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Learning rates are given per 256 images (linear scaling rule)."""
    return base_lr * global_batch / 256
