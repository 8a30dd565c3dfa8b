"""Our own GPU kernels (Triton). Import them only through `mambagen.layers.kernels`, which falls back
to the pure-PyTorch reference when Triton or a GPU is missing."""
