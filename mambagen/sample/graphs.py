"""Capture a whole sampling call as one CUDA graph.

Next-scale (VAR, M-VAR) and random-order (ARPG) decoding run a fixed sequence of fixed-shape
steps for a given batch size and schedule, with no host synchronisation: the whole call can be
recorded once and replayed per batch, which removes every per-kernel launch from the hot path.
Random draws use the default CUDA generator, whose state graphs advance on each replay (seed it
with `torch.cuda.manual_seed`; `GraphedCallSampler.generate` does so from the caller's generator).

`GraphedCallSampler` adds what pays inside the graph: ARPG's block steps compiled (one compiled
function per block kind, dynamic in the tokens and queries per step), M-VAR's blocks compiled for
its four largest scales with the Mamba2 scan in the tensor-core formulation of `layers/ssd_fast.py`,
and a fixed choice of SDPA backends (`decode_attention_backends`).
"""
from __future__ import annotations

import contextlib

import torch

from ..layers.embed import check_labels
from ..layers.mamba2 import scan_impl
from .fast import compiled_block_step


class GraphedCall:
    """graphed = GraphedCall(lambda labels: sampler(labels, ...), labels_example); out = graphed(labels).

    The outputs are the graph's own tensors, overwritten by the next call: copy what you keep.
    """

    def __init__(self, fn, labels: torch.Tensor, warmup: int = 2, check=None):
        if not labels.is_cuda:
            raise ValueError("CUDA graphs need CUDA tensors")
        self.fn, self.labels, self.check = fn, labels.clone(), check
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(warmup):
                fn(self.labels)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.out = fn(self.labels)

    def __call__(self, labels: torch.Tensor):
        if self.check is not None:
            self.check(labels)      # checks that sync with the host run here, outside the graph
        self.labels.copy_(labels)
        self.graph.replay()
        return self.out


def decode_attention_backends():
    """SDPA backends the sampler compiles and captures with. PyTorch's default order tries cuDNN's
    kernel first on Hopper; for decoding's few queries it was no faster (bench/results/
    h100_run7_arpg_attention.json: 123.3 vs 123.5 img/s compiled, 60.8 vs 61.5 eager), and this order
    is the one the results were measured with (run9: FlashAttention for ARPG's unmasked steps)."""
    from torch.nn.attention import SDPBackend
    return [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


class GraphedCallSampler:
    """A next-scale or random-order model's sampling call for one batch size and setting, compiled
    where it pays and captured as one CUDA graph.

    sampler = GraphedCallSampler(model, 16, cfg_scale=1.5, quantizer=vqvae.quantize)   # VAR / M-VAR
    sampler = GraphedCallSampler(model, 16, cfg_scale=4.0, num_iter=64)                 # ARPG
    result = sampler.generate(labels, rng)      # ScaleSample / RandomOrderSample (graph-owned tensors)

    The sampling arguments are those of `generate_scales` (cfg_scale is the guidance scale: its
    `cfg` is cfg_scale - 1) and `generate_random_order`; the results equal those calls' for the
    same random stream (tested against them). compile_blocks=False compiles nothing (a setup of
    seconds rather than tens of seconds, slower steps): eager block code (M-VAR's tensor-core scan too).
    """

    def __init__(self, model, batch: int, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, quantizer=None, num_iter: int = 64, compile_blocks: bool = True,
                 attention_backends=None):
        from .random_order import generate_random_order
        from .scales import generate_scales
        p = next(model.parameters())
        if not p.is_cuda:
            raise ValueError("GraphedCallSampler needs a model on a CUDA device")
        self.model, self.batch = model, batch
        num_classes = model.config.num_classes
        labels = torch.arange(batch, device=p.device) % num_classes
        opts = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=None)
        steps = compiled_block_step(model) if compile_blocks else None
        if hasattr(model, "decode_scale"):
            if quantizer is None:
                raise ValueError("a next-scale model's sampler needs the tokenizer's quantizer")
            fn = lambda lab: generate_scales(model, quantizer, lab, cfg=cfg_scale - 1, block_step=steps, **opts)
            # M-VAR: the tensor-core scan in chunks of 64 (its in-chunk decays grow with the chunk squared;
            # with chunk 256 Inductor failed to compile it, bench/results/h100_run7_fast_checks.json)
            model_setting = scan_impl(model, "compiled" if compile_blocks else "fast", chunk=64)
        elif hasattr(model, "decode_step"):
            fn = lambda lab: generate_random_order(model, lab, num_iter=num_iter, cfg_scale=cfg_scale,
                                                   block_steps=steps, **opts)
            model_setting = contextlib.nullcontext()
        else:
            raise ValueError(f"{type(model).__name__} is a raster model: use sample.fast.GraphedRasterSampler")
        backends = decode_attention_backends() if attention_backends is None else attention_backends
        with model_setting, torch.nn.attention.sdpa_kernel(backends):
            self.call = GraphedCall(fn, labels, check=lambda lab: check_labels(lab, num_classes))

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None):
        if labels.shape[0] != self.batch:
            raise ValueError(f"this sampler was built for batch {self.batch}, got {labels.shape[0]} labels")
        if generator is not None:   # the graph draws from the default CUDA generator: seed it from the caller's
            seed = torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)
            torch.cuda.manual_seed(int(seed))
        return self.call(labels)
