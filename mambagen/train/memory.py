"""Activation checkpointing, applied from outside the model: each block's forward is recomputed in
the backward pass instead of keeping its activations (large models, long sequences)."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def _checkpointed_forward(block: nn.Module, forward, *args, **kwargs):
    if block.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_blocks(model: nn.Module) -> None:
    """Route every block's forward through activation checkpointing while training (weights, state-dict
    keys and inference are unchanged)."""
    blocks = getattr(model, "blocks", None) or getattr(model, "layers", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no `blocks`/`layers` to checkpoint")
    for blk in blocks:
        if not getattr(blk, "_checkpointed", False):
            blk.forward = functools.partial(_checkpointed_forward, blk, blk.forward)
            blk._checkpointed = True
