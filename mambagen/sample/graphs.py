"""Capture a whole sampling call as one CUDA graph.

Next-scale (VAR, M-VAR) and random-order (ARPG) decoding run a fixed sequence of fixed-shape
steps for a given batch size and schedule, with no host synchronisation: the whole call can be
recorded once and replayed per batch, which removes every per-kernel launch from the hot path.
Random draws use the default CUDA generator, whose state graphs advance on each replay (seed it
with `torch.cuda.manual_seed`).
"""
from __future__ import annotations

import torch


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
