"""Run Triton kernels in Triton's interpreter when there is no GPU (CI is CPU only), so the fused
kernels are tested against the references here too. Must be set before anything imports Triton."""
import os

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
