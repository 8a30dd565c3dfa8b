"""Programmatic dependent launch (PDL, Hopper and later): a kernel launched with it may start while
the kernel before it in the stream finishes; it runs what does not depend on that kernel (loads of
weights or state), then waits (`griddepcontrol.wait`) before reading its outputs. Each of our
decode kernels waits, then lets the next one launch (`griddepcontrol.launch_dependents`), so an
early start overlaps only the immediately preceding kernel. CUDA graphs keep these edges.
"""
from __future__ import annotations

import os

import torch


def pdl_supported(device=None) -> bool:
    """Whether our kernels can be launched with PDL here (a Hopper-class GPU, not Triton's interpreter)."""
    if os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_options(pdl: bool) -> dict:
    """Extra Triton launch options: PDL only when asked (older Tritons and the interpreter lack it)."""
    return {"launch_pdl": True} if pdl else {}
