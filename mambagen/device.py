"""`--device` strings -> torch devices, with one clear line for what this machine cannot run."""
from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """None: cuda when a GPU is visible, else cpu. Refuses names torch does not know ('gpu') and CUDA
    devices this build or machine lacks, before any work starts."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"--device {name}: this torch ({torch.__version__}) is a CPU build without CUDA; "
                             "use --device cpu, or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: mambagen runs on cpu or cuda")
    return device
