"""GPU fast path for raster decoding: one CUDA graph per decode step, compiled block steps.

The reference loop (`raster.generate_raster`) launches every small kernel of every layer from
Python for every token. Here the whole step - all blocks, the head, CFG and sampling - is
captured once into a CUDA graph and replayed per token; the block step itself is compiled
(regional compilation: one compiled function serves every block, since they share code and
shapes) so its elementwise work fuses. The cache is preallocated and written in place, so
the graph's buffers never move. On CUDA with Triton, AiM's mixers decode through the fused
kernel (`kernels/mamba2_step.py`: conv, SSM update, skip and gate in one kernel per layer).

Sampling inside the graph is Gumbel-max on the filtered logits with noise drawn outside it
(one kernel per step): the same distribution as `sample_logits`, a different random stream.
Greedy decoding (temperature 0 or top-k 1) is exactly the reference's argmax.
"""
from __future__ import annotations

import torch

from ..layers import kernels
from ..layers.attention import KVCache
from ..layers.mamba2 import Mamba2Cache
from .logits import cfg_combine, check_sampling_args, top_k_top_p_filter


def _aim_block_step(blk, x, mod, conv, ssm, conv_pair, index):
    return blk.step(x, mod, Mamba2Cache(conv, ssm, conv_pair), index)


def _gpt_block_step(layer, x, rope, k, v, pos, visible):
    return layer.step(x, rope, KVCache(k, v), pos, visible)


def compiled_block_step(model, mode: str | None = None):
    """One compiled block step for every block of the model (regional compilation), or None.
    mode: torch.compile's mode ("max-autotune-no-cudagraphs" also tunes the matmuls for these shapes)."""
    # fullgraph=False: a custom kernel the compiler cannot trace splits the region instead of failing
    name = type(model).__name__
    if name == "AiM":
        step = torch.compile(_aim_block_step, fullgraph=False, dynamic=False, mode=mode)
        return lambda blk, x, mod, lc, index: step(blk, x, mod, lc.conv, lc.ssm, lc.conv_pair, index)
    if name == "GPT":
        return torch.compile(_gpt_block_step, fullgraph=False, dynamic=False, mode=mode)
    return None


def fused_decode_available(model) -> bool:
    """Whether AiM decoding can use the fused Mamba2 kernel here (CUDA weights, Triton importable)."""
    return (type(model).__name__ == "AiM" and kernels.mamba2_step_fused is not None
            and next(model.parameters()).is_cuda)


def sample_with_noise(logits, noise, temperature: float, top_k: int, top_p: float):
    """Gumbel-max: argmax(filtered(logits) / T + g), g = -log(-log(u)), u ~ U(0, 1) given."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = top_k_top_p_filter(logits.float() / temperature, top_k, top_p)
    return (logits - torch.log(-torch.log(noise.clamp(1e-10, 1 - 1e-7)))).argmax(-1)


class GraphedRasterSampler:
    """Raster decoding for a fixed batch size and sampling setting, captured as a CUDA graph.

    sampler = GraphedRasterSampler(model, batch=16, cfg_scale=2.0, top_k=0)
    tokens = sampler.generate(labels, generator)      # (16, N), reusable for many batches
    """

    def __init__(self, model, batch: int, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, compile_blocks: bool = True, graph: bool = True, fused: bool | None = None,
                 compile_mode: str | None = None):
        check_sampling_args(cfg_scale, temperature, top_k, top_p)
        self.model, self.batch = model, batch
        self.cfg_scale, self.temperature, self.top_k, self.top_p = cfg_scale, temperature, top_k, top_p
        self.guided = cfg_scale != 1.0
        p = next(model.parameters())
        rows = 2 * batch if self.guided else batch
        V = model.config.vocab_size
        # fused: AiM's fused Mamba2 decode kernel (None: wherever it is available)
        self.fused = fused_decode_available(model) if fused is None else fused
        self.cache = model.allocate_cache(rows, paired_conv=True) if self.fused else model.allocate_cache(rows)
        self.tok_in = torch.zeros(rows, dtype=torch.long, device=p.device)
        self.tok_out = torch.zeros(batch, dtype=torch.long, device=p.device)
        self.index = torch.zeros((), dtype=torch.long, device=p.device)
        self.noise = torch.rand(batch, V, device=p.device)
        self.block_step = compiled_block_step(model, compile_mode) if compile_blocks else None
        self.graph = None
        if graph and p.is_cuda:
            self._capture()

    def _step(self):
        logits = self.model.step(self.tok_in, self.cache, self.index, block_step=self.block_step)
        if self.guided:
            logits = cfg_combine(*logits.float().chunk(2), self.cfg_scale)
        tok = sample_with_noise(logits, self.noise, self.temperature, self.top_k, self.top_p)
        self.tok_out.copy_(tok)
        self.tok_in.copy_(torch.cat([tok, tok]) if self.guided else tok)

    @torch.no_grad()
    def _capture(self):
        # warm up on a side stream (compilation, cuBLAS handles), then capture one step
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if labels.shape[0] != self.batch:
            raise ValueError(f"this sampler was built for batch {self.batch}, got {labels.shape[0]} labels")
        cfg = self.model.config
        N = cfg.num_tokens
        all_labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)]) if self.guided else labels
        tokens = torch.empty(self.batch, N, dtype=torch.long, device=labels.device)
        logits = self.model.prefill(all_labels, self.cache)          # writes the graph's cache in place
        if self.guided:
            logits = cfg_combine(*logits.float().chunk(2), self.cfg_scale)
        self.noise.uniform_(generator=generator)
        tok = sample_with_noise(logits, self.noise, self.temperature, self.top_k, self.top_p)
        tokens[:, 0] = tok
        self.tok_in.copy_(torch.cat([tok, tok]) if self.guided else tok)
        for i in range(N - 1):
            self.index.fill_(i)
            if not (self.temperature == 0 or self.top_k == 1):
                self.noise.uniform_(generator=generator)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
            tokens[:, i + 1] = self.tok_out
        return tokens
