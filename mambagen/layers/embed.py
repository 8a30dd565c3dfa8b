"""Class embeddings with a null class for classifier-free guidance."""
from __future__ import annotations

import torch


def drop_labels(labels: torch.Tensor, p: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by `null_class` with probability p (CFG training).

    The draw comes from the passed generator, never from the model's mode.
    """
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device="cpu").to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def check_labels(labels: torch.Tensor, num_classes: int, allow_null: bool = True) -> None:
    """Clear error for class ids outside [0, num_classes) (num_classes itself is the null class)."""
    if labels.is_cuda and torch.cuda.is_current_stream_capturing():
        return   # no host sync inside a CUDA graph: the caller checks labels before each replay
    hi = num_classes + (1 if allow_null else 0)
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"class labels must be integer tensors, got {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= hi)]
    if bad.numel():
        raise ValueError(f"class id {int(bad[0])} is out of range: this model has {num_classes} classes "
                         f"(0..{num_classes - 1}{', and ' + str(num_classes) + ' = null' if allow_null else ''})")
