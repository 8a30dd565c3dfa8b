"""GPU fast path for raster decoding: one CUDA graph per decode step, compiled block steps.

The reference loop (`raster.generate_raster`) launches every small kernel of every layer from
Python for every token. Here the whole step - all blocks, the head, CFG and sampling - is
captured once into a CUDA graph and replayed per token; the block step itself is compiled
(regional compilation: one compiled function serves every block, since they share code and
shapes) so its elementwise work fuses. The cache is preallocated and written in place, so
the graph's buffers never move.

AiM on CUDA with Triton runs each block as four kernels (see `_aim_block_step`): the previous
block's residual update with this block's norm and adaLN (`kernels/residual_norm.py`), in_proj,
conv + SSM update + skip + gate (`kernels/mamba2_step.py`), and a split-K out_proj with the gated
norm folded in (`kernels/skinny_linear.py`). Its start - conditioning and the class token's step
from an empty state, which is what prefill computes - is a graph too. Every piece has a PyTorch
reference, and the tests compare them (on CPU in Triton's interpreter).

Sampling inside the graph is Gumbel-max on the filtered logits with noise drawn outside it
(one kernel per step): the same distribution as `sample_logits`, a different random stream.
Greedy decoding (temperature 0 or top-k 1) is exactly the reference's argmax.
"""
from __future__ import annotations

import torch

from ..layers import kernels
from ..layers.attention import cached_block_step
from ..layers.embed import check_labels
from ..layers.mamba2 import Mamba2Cache
from .logits import cfg_combine, check_sampling_args, top_k_top_p_filter


OUT_PROJ_SPLIT = 8   # split-K of the fused path's out_proj (bench/results/h100_decode_parts_tuning.json)


def _out_proj_block_k(m, rows: int) -> int | None:
    """The K tile of the fused path's split-K out_proj for this mixer, or None where the fused path
    cannot run it (then the mixer's own norm and out_proj run)."""
    block_k = min(64, m.d_inner // OUT_PROJ_SPLIT)
    ok = (kernels.skinny_linear is not None and kernels.residual_norm_modulate is not None
          and m.norm is not None and m.out_proj.bias is None and rows <= 128
          and block_k >= 16 and block_k & (block_k - 1) == 0 and m.d_inner % (OUT_PROJ_SPLIT * block_k) == 0
          and OUT_PROJ_SPLIT % m.ngroups == 0)
    return block_k if ok else None


def _aim_block_step(blk, x, pending, mod, conv, ssm, conv_pair, index):
    """AiM block i's decode step with block i-1's residual update (`pending`) moved in, so that it
    runs in the same kernel as this block's norm. Returns (x, pending).

    With a paired cache, three Triton kernels and in_proj: [block i-1's update + norm + adaLN] ->
    in_proj -> [conv, SSM, skip, gate] -> one split-K matmul of (g * norm weight) by out_proj; the
    gated RMSNorm's 1 / rms, a scalar per row (and group), is applied to that matmul's output by the
    next block. Otherwise the same in PyTorch with the mixer's own step (compiled by the caller).
    """
    m, cache = blk.mixer, Mamba2Cache(conv, ssm, conv_pair)
    block_k = _out_proj_block_k(m, x.shape[0])
    if conv_pair is not None and block_k is not None:
        g, parts, gate = pending if pending is not None else (None, None, None)
        x, h = kernels.residual_norm_modulate(x, mod, blk.norm.weight, blk.norm.eps, m.in_proj.weight.dtype,
                                              g, parts, gate, m.norm.eps, m.ngroups)
        g = m.fused_core(m.in_proj(h), cache, index)                           # (B, d_inner) = y * SiLU(z)
        parts = kernels.skinny_linear(g, m.out_proj.weight, scale=m.norm.weight, split=OUT_PROJ_SPLIT,
                                      block_n=32, block_k=block_k, num_stages=4)   # (split, B, d_model) fp32
        return x, (g, parts, mod[:, 2])
    if pending is not None:
        x = x + _residual_update(m, *pending)
    h, gate = blk.mixer_input(x, mod)
    return x, (None, m.step(h, cache, index), gate)


def _residual_update(m, g, out, gate):
    """gate * out_proj(gated norm output) as a float32 (B, d_model). `out` is out_proj's output, or,
    when g is given, the split-K partials of out_proj(g * norm weight) (see `_aim_block_step`)."""
    if g is None:
        return (gate * out).float()
    G = m.ngroups
    rstd = torch.rsqrt(g.float().unflatten(-1, (G, -1)).pow(2).mean(-1) + m.norm.eps)   # (B, G)
    per_group = out.unflatten(0, (G, -1)).sum(1)                       # (G, B, d_model)
    return gate.float() * (per_group * rstd.T[:, :, None]).sum(0)


def _aim_blocks(model, x, cache, index, block_step):
    pending = None
    for blk, mod, lc in zip(model.blocks, cache.mods, cache.layers):
        x, pending = block_step(blk, x, pending, mod, lc.conv, lc.ssm, lc.conv_pair, index)
    return model._head(x + _residual_update(model.blocks[-1].mixer, *pending), cache.final)


def aim_step(model, tokens, cache, index, block_step=_aim_block_step):
    """`AiM.step` with the blocks' residual updates deferred (see `_aim_block_step`): same logits."""
    return _aim_blocks(model, model.embed_step(tokens, index), cache, index, block_step)


def aim_start(model, labels, cache, parity_index, block_step=_aim_block_step):
    """`AiM.prefill(labels, cache)` (no prefix) as a decoding step of the class token from an empty
    state - the same computation, and capturable in a CUDA graph (no host syncs: labels are checked
    by the caller). parity_index: an odd 0-d tensor, so that token 0's step finds the conv history
    in the buffer it reads (see `Mamba2Cache.conv_pair`)."""
    cache.reset()
    c, mods, final = model.condition(labels)
    cache.mods.copy_(mods)
    cache.final.copy_(final)
    return _aim_blocks(model, c.float(), cache, parity_index, block_step)


def compiled_block_step(model, mode: str | None = None):
    """One compiled block step for every block of the model (regional compilation), or None.
    ARPG: a pair (self-decoder step, cross-decoder step), dynamic in the tokens and queries per step
    (its schedule varies them; a few compilations then cover every step). M-VAR: compiled per scale
    length for its largest scales. VAR: None (its whole-call graph is fast enough, docs/speed.md).
    mode: torch.compile's mode ("max-autotune-no-cudagraphs" also tunes the matmuls for these shapes)."""
    # fullgraph=False: a custom kernel the compiler cannot trace splits the region instead of failing
    name = type(model).__name__
    if name == "MVAR":
        return _mvar_block_step(mode)
    if name == "ARPG":
        from ..models.arpg import cross_block_step
        return tuple(torch.compile(f, fullgraph=False, dynamic=True, mode=mode)
                     for f in (cached_block_step, cross_block_step))
    fn = {"AiM": _aim_block_step, "GPT": cached_block_step}.get(name)
    return None if fn is None else torch.compile(fn, fullgraph=False, dynamic=False, mode=mode)


def _mvar_block_step(mode):
    """M-VAR's block step compiled for scales of COMPILED_MIN_LEN tokens or more (its four largest: one
    compilation each), eager for the small ones, where compiling gains little."""
    from ..layers import mamba2
    from ..models.mvar import block_decode_step
    compiled = torch.compile(block_decode_step, fullgraph=False, dynamic=False, mode=mode)

    def step(blk, x, cond, conv, ssm):
        return (compiled if x.shape[1] >= mamba2.COMPILED_MIN_LEN else block_decode_step)(blk, x, cond, conv, ssm)
    return step


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
    """Raster decoding for a fixed batch size and sampling setting, captured as CUDA graphs.

    sampler = GraphedRasterSampler(model, batch=16, cfg_scale=2.0, top_k=0)
    tokens = sampler.generate(labels, generator)      # (16, N), reusable for many batches

    Two graphs: the start (AiM: conditioning and the class token's step; other models prefill
    eagerly) and one token step, which also writes its token into the output and advances the
    step index, so that the host loop is a noise draw and a replay per token.
    """

    def __init__(self, model, batch: int, *, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, compile_blocks: bool = True, graph: bool = True, fused: bool | None = None,
                 compile_mode: str | None = None):
        check_sampling_args(cfg_scale, temperature, top_k, top_p)
        self.model, self.batch = model, batch
        self.cfg_scale, self.temperature, self.top_k, self.top_p = cfg_scale, temperature, top_k, top_p
        self.guided = cfg_scale != 1.0
        self.is_aim = type(model).__name__ == "AiM"
        p = next(model.parameters())
        rows = 2 * batch if self.guided else batch
        V, N = model.config.vocab_size, model.config.num_tokens
        # fused: AiM's fused Mamba2 decode kernel (None: wherever it is available)
        self.fused = fused_decode_available(model) if fused is None else fused
        self.cache = model.allocate_cache(rows, paired_conv=True) if self.fused else model.allocate_cache(rows)
        self.labels = torch.zeros(rows, dtype=torch.long, device=p.device)
        self.tok_in = torch.zeros(rows, dtype=torch.long, device=p.device)
        self.tokens = torch.zeros(batch, N, dtype=torch.long, device=p.device)
        self.index = torch.zeros((), dtype=torch.long, device=p.device)
        self.odd = torch.ones((), dtype=torch.long, device=p.device)
        self.noise = torch.rand(batch, V, device=p.device)
        self.block_step = compiled_block_step(model, compile_mode) if compile_blocks else None
        self.start_graph = self.step_graph = None
        if graph and p.is_cuda:
            self._capture()

    def step_logits(self, tokens: torch.Tensor, index: torch.Tensor, cache=None) -> torch.Tensor:
        """One decoding step through this sampler's path (compiled / fused) on its cache or `cache`."""
        cache = self.cache if cache is None else cache
        if self.is_aim:
            return aim_step(self.model, tokens, cache, index, self.block_step or _aim_block_step)
        return self.model.step(tokens, cache, index, block_step=self.block_step)

    def _draw(self, logits: torch.Tensor) -> torch.Tensor:
        """CFG + sampling of (rows, V) logits; feeds the token back (both CFG halves)."""
        if self.guided:
            logits = cfg_combine(*logits.float().chunk(2), self.cfg_scale)
        tok = sample_with_noise(logits, self.noise, self.temperature, self.top_k, self.top_p)
        self.tok_in.copy_(torch.cat([tok, tok]) if self.guided else tok)
        return tok

    def _start(self):
        """Conditioning and the first token (AiM: the class token's step; capturable)."""
        self.index.zero_()
        if self.is_aim:
            logits = aim_start(self.model, self.labels, self.cache, self.odd, self.block_step or _aim_block_step)
        else:
            logits = self.model.prefill(self.labels, self.cache)
        self.tokens[:, 0] = self._draw(logits)

    def _step(self):
        """Token `index` in, token index + 1 drawn and stored; the index advances."""
        tok = self._draw(self.step_logits(self.tok_in, self.index))
        self.tokens.index_copy_(1, (self.index + 1).reshape(1), tok[:, None])
        self.index.add_(1)

    @torch.no_grad()
    def _capture(self):
        # warm up on a side stream (compilation, cuBLAS handles), then capture
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self._start()
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        if self.is_aim:
            self.start_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.start_graph):
                self._start()
        self.step_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.step_graph):
            self._step()

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if labels.shape[0] != self.batch:
            raise ValueError(f"this sampler was built for batch {self.batch}, got {labels.shape[0]} labels")
        check_labels(labels, self.model.config.num_classes)          # here: the graphs cannot sync
        null = torch.full_like(labels, self.model.config.num_classes)
        self.labels.copy_(torch.cat([labels, null]) if self.guided else labels)
        random = not (self.temperature == 0 or self.top_k == 1)
        if random:
            self.noise.uniform_(generator=generator)
        self.start_graph.replay() if self.start_graph is not None else self._start()
        for _ in range(self.model.config.num_tokens - 1):
            if random:
                self.noise.uniform_(generator=generator)
            self.step_graph.replay() if self.step_graph is not None else self._step()
        return self.tokens.clone()
