"""CUDA graphs for sampling: one capture helper, and the whole-call sampler built on it.

`CapturedGraph(fn)` warms `fn` up on a side stream (compilation, cuBLAS handles), records it once
and replays it; `fn` reads and writes only tensors that outlive it (static buffers), so a replay
is the whole recorded computation with no Python in between. The raster step sampler
(`sample.fast`) captures its start and its token step with it; `GraphedCallSampler` captures a
whole sampling call: next-scale (VAR, M-VAR) and random-order (ARPG) decoding run a fixed sequence
of fixed-shape steps for a batch size and setting, with no host synchronisation.

What goes inside is the family's: `fast` is its record's fast-call object (compiled block steps
and the model setting they run under, e.g. M-VAR's tensor-core scan), so this module knows no
model family. Draws: with a `torch.Generator` the graph draws from the default CUDA generator,
seeded from the caller's generator on each call; with `RowStreams` the per-row seeds are a static
buffer the graph reads (the same tokens as the reference loop under the same streams, up to
floating-point differences).
"""
from __future__ import annotations

import contextlib

import torch

from ..layers.embed import check_labels
from .streams import RowStreams


class CapturedGraph:
    """g = CapturedGraph(fn); g.replay() runs what fn() ran, on the same buffers. `g.out` is fn's return
    value at capture (graph-owned tensors, overwritten by each replay)."""

    def __init__(self, fn, warmup: int = 2):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.out = fn()

    def replay(self):
        self.graph.replay()
        return self.out


class GraphedCall:
    """graphed = GraphedCall(lambda labels: sampler(labels, ...), labels_example); out = graphed(labels).

    The outputs are the graph's own tensors, overwritten by the next call: copy what you keep.
    """

    def __init__(self, fn, labels: torch.Tensor, warmup: int = 2, check=None):
        if not labels.is_cuda:
            raise ValueError("CUDA graphs need CUDA tensors")
        self.labels, self.check = labels.clone(), check
        self.captured = CapturedGraph(lambda: fn(self.labels), warmup)

    def __call__(self, labels: torch.Tensor):
        if self.check is not None:
            self.check(labels)      # checks that sync with the host run here, outside the graph
        self.labels.copy_(labels)
        return self.captured.replay()


def decode_attention_backends():
    """SDPA backends the sampler compiles and captures with. PyTorch's default order tries cuDNN's
    kernel first on Hopper; for decoding's few queries it was no faster (bench/results/
    h100_run7_arpg_attention.json: 123.3 vs 123.5 img/s compiled, 60.8 vs 61.5 eager), and this order
    is the one the results were measured with (run9: FlashAttention for ARPG's unmasked steps)."""
    from torch.nn.attention import SDPBackend
    return [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


class GraphedCallSampler:
    """A next-scale or random-order model's sampling call for one batch size, setting and kind of rng,
    compiled where it pays and captured as one CUDA graph.

    sampler = GraphedCallSampler(model, 16, call, fast, rows=False)
    result = sampler.generate(labels, rng)      # the call's result (graph-owned tensors)

    call(model, labels, rng, block_steps) is the family's reference call (its sampling setting bound);
    fast is the family's fast-call object: `block_steps` (compiled, or None) and `setting()` (a context
    the call is captured under). rows: the graph draws from per-row streams (`RowStreams`).
    """

    def __init__(self, model, batch: int, call, fast, *, rows: bool = False, attention_backends=None):
        p = next(model.parameters())
        if not p.is_cuda:
            raise ValueError("GraphedCallSampler needs a model on a CUDA device")
        self.model, self.batch, self.rows = model, batch, rows
        num_classes = model.config.num_classes
        labels = torch.arange(batch, device=p.device) % num_classes
        self.streams = RowStreams(torch.zeros(batch, dtype=torch.long, device=p.device)) if rows else None
        fn = lambda lab: call(model, lab, self.streams, fast.block_steps)
        backends = decode_attention_backends() if attention_backends is None else attention_backends
        with fast.setting(), torch.nn.attention.sdpa_kernel(backends):
            self.call = GraphedCall(fn, labels, check=lambda lab: check_labels(lab, num_classes))

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, rng=None):
        if labels.shape[0] != self.batch:
            raise ValueError(f"this sampler was built for batch {self.batch}, got {labels.shape[0]} labels")
        if self.rows:
            if not isinstance(rng, RowStreams) or len(rng) != self.batch:
                raise ValueError("this sampler draws from per-row streams: pass a RowStreams of the batch size")
            self.streams.seeds.copy_(rng.seeds)
        elif rng is not None:   # the graph draws from the default CUDA generator: seed it from the caller's
            seed = torch.randint(0, 2 ** 62, (1,), generator=rng, device=rng.device)
            torch.cuda.manual_seed(int(seed))
        return self.call(labels)


class NoFastSetting:
    """A fast-call object with nothing compiled and no setting (the eager call as one graph)."""
    block_steps = None

    @staticmethod
    def setting():
        return contextlib.nullcontext()
