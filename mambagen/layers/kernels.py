"""The one place optional fast kernels are looked up.

Every name is None when its package is absent or cannot be imported (e.g. no GPU
build); callers then use the pure-PyTorch reference. Nothing here is required.
"""
from __future__ import annotations

import contextlib
import os
import threading


def _can_run_kernels() -> bool:
    """Whether a kernel could run here: a CUDA GPU, or Triton's interpreter (the CPU tests). Elsewhere the
    imports are skipped: importing Triton costs about half a second of every CPU command's start-up."""
    import torch
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def _optional(module: str, name: str):
    if module != "triton" and not _RUNNABLE:
        return None
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except Exception:  # ImportError, missing CUDA libraries, Triton errors at import ...
        return None


_RUNNABLE = _can_run_kernels()
mamba_chunk_scan_combined = _optional("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
selective_state_update = _optional("mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
causal_conv1d_fn = _optional("causal_conv1d", "causal_conv1d_fn")
causal_conv1d_update = _optional("causal_conv1d", "causal_conv1d_update")
# our own Triton kernels (need Triton and a GPU at run time)
ssm_step_inplace = _optional("mambagen.kernels.ssm_step", "ssm_step_inplace")
mamba2_step_fused = _optional("mambagen.kernels.mamba2_step", "mamba2_step_fused")
skinny_linear = _optional("mambagen.kernels.skinny_linear", "skinny_linear")
residual_norm_modulate = _optional("mambagen.kernels.residual_norm", "residual_norm_modulate")
ssd_chunked_triton = _optional("mambagen.kernels.ssd_scan", "ssd_chunked_triton")
conv_silu = _optional("mambagen.kernels.conv_silu", "conv_silu")
gated_rms_norm = _optional("mambagen.kernels.gated_norm", "gated_rms_norm")


_local = threading.local()


@contextlib.contextmanager
def reference_only():
    """Inside this block the layers choose their PyTorch references over every optional kernel (the
    reference samplers run under it, so `--reference` is the readable path on a GPU too)."""
    before = getattr(_local, "reference", False)
    _local.reference = True
    try:
        yield
    finally:
        _local.reference = before


def kernels_allowed() -> bool:
    """False inside `reference_only()`."""
    return not getattr(_local, "reference", False)


def triton_available() -> bool:
    """Whether Triton imports (our kernels and torch.compile's GPU code need it)."""
    return _optional("triton", "jit") is not None


KERNELS = ("mamba_chunk_scan_combined", "selective_state_update", "causal_conv1d_fn", "causal_conv1d_update",
           "ssm_step_inplace", "mamba2_step_fused", "skinny_linear", "residual_norm_modulate",
           "ssd_chunked_triton", "conv_silu", "gated_rms_norm")


def available() -> dict[str, bool]:
    """Which optional kernels can run here (for `mambagen info`): imported, and a CUDA GPU to run them on
    (on a CPU-only machine they import only for the interpreter tests, and never run)."""
    import torch
    gpu = torch.cuda.is_available()
    return {name: globals()[name] is not None and gpu for name in KERNELS}


def importable() -> dict[str, bool]:
    """Which optional kernels imported (they still need a GPU)."""
    return {name: globals()[name] is not None for name in KERNELS}
