"""GPU fast path for raster decoding: one CUDA graph per decode step.

The reference loop (`raster.generate_raster`) launches every small kernel of every layer from
Python for every token. Here the whole step - the family's decode step, CFG and sampling - is
captured once (`graphs.CapturedGraph`) and replayed per token. The step itself is the family's:
its record's fast decode object (`models.gpt.GPTFastDecode`: compiled block steps; `models.aim_fast
.AiMFastDecode`: fused Triton kernels), built for the batch's rows, owning its preallocated cache:

    decode = Decode(model, rows, compile_blocks=True)    # .start(labels) / .step(tokens, index) -> logits
                                                         # .capture_start: whether start is capturable

Sampling inside the graph is Gumbel-max on the filtered logits. With a `torch.Generator` the noise
is drawn outside the graph (one kernel per step): the same distribution as the reference's
multinomial, a different random stream. With per-row streams (`RowStreams`) the noise is computed
inside the graph from the rows' seeds and the token index: the reference loop's own draws. Greedy
decoding (temperature 0 or top-k 1) is exactly the reference's argmax.
"""
from __future__ import annotations

import torch

from ..layers.embed import check_labels
from .config import SamplingConfig
from .graphs import CapturedGraph
from .logits import cfg_combine, gumbel_max
from .streams import RowStreams


class GraphedRasterSampler:
    """Raster decoding for a fixed batch size, sampling setting and kind of rng, as CUDA graphs.

    sampler = GraphedRasterSampler(model, Decode, 16, SamplingConfig(cfg_scale=2.0))
    tokens = sampler.generate(labels, rng)      # (16, N), reusable for many batches

    Two graphs: the start (where the family's start is capturable; otherwise it runs eagerly) and one
    token step, which also writes its token into the output and advances the step index, so that the
    host loop is at most a noise draw and a replay per token. graph=False runs the same steps eagerly
    (on CPU: the tests).
    """

    def __init__(self, model, decode_cls, batch: int, sampling: SamplingConfig, *, rows: bool = False,
                 compile_blocks: bool = True, graph: bool = True, **decode_options):
        self.model, self.batch, self.sampling, self.rows = model, batch, sampling, rows
        p = next(model.parameters())
        self.guided = sampling.guided
        n_rows = 2 * batch if self.guided else batch
        V, N = model.config.vocab_size, model.config.num_tokens
        self.decode = decode_cls(model, n_rows, compile_blocks=compile_blocks, **decode_options)
        self.labels = torch.zeros(n_rows, dtype=torch.long, device=p.device)
        self.tok_in = torch.zeros(n_rows, dtype=torch.long, device=p.device)
        self.tokens = torch.zeros(batch, N, dtype=torch.long, device=p.device)
        self.known = torch.zeros(batch, N, dtype=torch.long, device=p.device)    # a prefix to keep (editing)
        self.known_len = torch.zeros((), dtype=torch.long, device=p.device)
        self.index = torch.zeros((), dtype=torch.long, device=p.device)
        self.noise = torch.rand(batch, V, device=p.device)
        self.streams = RowStreams(torch.zeros(batch, dtype=torch.long, device=p.device)) if rows else None
        self.start_graph = self.step_graph = None
        if graph and p.is_cuda:
            self._capture()

    def _draw(self, logits: torch.Tensor, t) -> torch.Tensor:
        """CFG + sampling of token t from (rows, V) logits (token t of the kept prefix instead, while t is in
        it); feeds the token back (both CFG halves)."""
        s = self.sampling
        if self.guided:
            cond, uncond = logits.float().chunk(2)
            logits = cfg_combine(cond, uncond, s.cfg_scale)
            if s.cfg_interval > -1 and isinstance(t, int):    # LlamaGen: conditional only after the interval
                logits = cond if t > s.cfg_interval + 1 else logits
            elif s.cfg_interval > -1:
                logits = torch.where(t > s.cfg_interval + 1, cond, logits)
        noise = self.streams.uniform(t, (logits.shape[-1],)) if self.rows and not s.greedy else self.noise
        tok = gumbel_max(logits, noise, s.temperature, s.top_k, s.top_p)
        known = self.known[:, t] if isinstance(t, int) else self.known.index_select(1, t.reshape(1))[:, 0]
        tok = torch.where(self.known_len > t, known, tok)
        self.tok_in.copy_(torch.cat([tok, tok]) if self.guided else tok)
        return tok

    def _start(self):
        """Conditioning and the first token."""
        self.index.zero_()
        self.tokens[:, 0] = self._draw(self.decode.start(self.labels), 0)

    def _step(self):
        """Token `index` in, token index + 1 drawn and stored; the index advances."""
        tok = self._draw(self.decode.step(self.tok_in, self.index), self.index + 1)
        self.tokens.index_copy_(1, (self.index + 1).reshape(1), tok[:, None])
        self.index.add_(1)

    def _capture(self):
        if self.decode.capture_start:
            self.start_graph = CapturedGraph(self._start)
        else:
            self._start()             # warms up what the step graph reads
        self.step_graph = CapturedGraph(self._step)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, rng=None, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, N) tokens; prefix (batch, P): the first P tokens are kept as given (the rows above a
        region to regenerate), the model is fed them step by step and continues after them."""
        if labels.shape[0] != self.batch:
            raise ValueError(f"this sampler was built for batch {self.batch}, got {labels.shape[0]} labels")
        check_labels(labels, self.model.config.num_classes)          # here: the graphs cannot sync
        null = torch.full_like(labels, self.model.config.num_classes)
        self.labels.copy_(torch.cat([labels, null]) if self.guided else labels)
        P = 0 if prefix is None else prefix.shape[1]
        if not 0 <= P < self.model.config.num_tokens:
            raise ValueError(f"prefix has {P} tokens; it must be shorter than the {self.model.config.num_tokens} of an image")
        if P:
            self.known[:, :P].copy_(prefix)
        self.known_len.fill_(P)
        if self.rows:
            if not isinstance(rng, RowStreams) or len(rng) != self.batch:
                raise ValueError("this sampler draws from per-row streams: pass a RowStreams of the batch size")
            self.streams.seeds.copy_(rng.seeds)
        outside = not (self.rows or self.sampling.greedy)            # noise drawn here, per token
        if outside:
            self.noise.uniform_(generator=rng)
        self.start_graph.replay() if self.start_graph is not None else self._start()
        for _ in range(self.model.config.num_tokens - 1):
            if outside:
                self.noise.uniform_(generator=rng)
            self.step_graph.replay() if self.step_graph is not None else self._step()
        return self.tokens.clone()
