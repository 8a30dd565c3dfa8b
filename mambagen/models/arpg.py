"""ARPG: autoregressive image generation in a randomized parallel order (Li et al. 2025).

Tokens are generated in a random order, several at a time. The paper's point is that a
random-order model must be told WHERE the next token goes, so position guidance (queries)
is decoupled from content (keys/values):

    self-decoder   causal attention over [class, t_{o_0}, ..., t_{o_{N-2}}]          (content)
                   each token carrying the 2-D RoPE of its own grid position
    shared K/V     k = RoPE(to_k(norm(h))), v = to_v(norm(h)), computed ONCE and used by
                   every cross-decoder block
    cross-decoder  queries are the learned [MASK] embedding, carrying the 2-D RoPE of the
                   position to PREDICT ("target-aware"), attending to the shared K/V

so query i (position o_i) sees the class and the tokens o_0 .. o_{i-1}: logits[:, i] predicts
t_{o_i}. n_layer // 2 self-decoder blocks come first, then n_layer // 2 cross-decoder blocks
(pre-norm LLaMA blocks: RMSNorm, bias-free attention, SwiGLU).

Token space (one embedding table, the official layout): rows [0, V) image tokens, V the
mask token, V + 1 + c class c, V + 1 + K the null class (our label K), V + K + 2 an unused
extra row. RoPE rows: 0 is the class slot (zeros in the official table, which zeroes the class
token's rotated query and key), 1 + p is grid position p in raster order.

Decoding (`allocate_cache`, `prefill`, `decode_step`): the tokens decided at step s are fed at
step s + 1, written into a preallocated cache at fixed slots (slot 0 the class, slot 1 + j the
j-th token in generation order); any number of queries is decoded at once against the shared
cross K/V. Causality is always an explicit argument: official training is causal, official
sampling lets the tokens fed in one step see each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..family import Family, Size
from ..layers.attention import KVCache, cached_block_step
from ..layers.embed import check_labels
from ..layers.llama import LlamaGridConfig, float_logits, grid_rope
from ..layers.mlp import SwiGLU, llama_init_
from ..layers.norm import RMSNorm
from ..layers.rope import apply_rope
from ..sample.random_order import RANDOM_ORDER
from ..tokenizers import KINDS


@dataclass
class ARPGConfig(LlamaGridConfig):
    """LlamaGridConfig with ARPG's defaults. n_layer // 2 self-decoder blocks come first, then n_layer // 2
    cross-decoder blocks. cls_token_num: zero RoPE rows in front of the grid; grid position p always uses
    row 1 + p, so values > 1 shift the grid by one row per extra zero row (the official table does exactly
    this). token_dropout falls on the content embeddings, not on the queries."""

    def __post_init__(self):
        super().__post_init__()
        if self.n_layer < 2:
            raise ValueError(f"{type(self).__name__}: n_layer must be >= 2 (half self-, half cross-decoder), "
                             f"got {self.n_layer}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def embedding_rows(self) -> int:
        """tokens, mask, classes, null class, extra."""
        return self.vocab_size + 1 + self.num_classes + 1 + 1

    @property
    def cache_len(self) -> int:
        """Cache slots: the class and every token (the last step's tokens are never fed back)."""
        return 1 + self.num_tokens



@dataclass
class ARPGCache:
    """Everything decoding needs, preallocated once per batch and written in place.

    self_kv:  one KVCache per self-decoder block, k and v (B, H, 1 + N, head_dim)
    cross_kv: the shared cross-decoder keys (RoPE applied) and values (B, H, 1 + N, head_dim)
    slots:    (1 + N,) 0 .. N, for the causal mask of a prefill

    Slot 0 holds the class token, slot 1 + j the j-th token fed (generation order). A step attends
    to the written slots only, [0, start + n): they fill in order, so no mask is needed for what is
    not written yet, and early steps read a short prefix of the cache.
    """
    self_kv: list[KVCache]
    cross_kv: KVCache
    slots: torch.Tensor

    @property
    def length(self) -> int:
        return self.slots.shape[0]


def _attend(q, k, v, causal: bool, mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
    """q (B, H, Lq, hd), k/v (B, H, Lk, hd); `mask` boolean (True = may attend), broadcast to
    (B, H, Lq, Lk). Returns (B, Lq, H * hd)."""
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout)
    return o.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Self-decoder attention: 2-D RoPE on queries and keys."""

    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.proj_drop = nn.Dropout(cfg.resid_dropout)

    def qkv(self, x: torch.Tensor, rope: torch.Tensor):
        """x (B, L, D), rope (B, L, hd/2, 2) -> q, k, v (B, H, L, hd)."""
        B, L, _ = x.shape
        q = apply_rope(self.to_q(x).view(B, L, self.n_head, self.head_dim), rope)
        k = apply_rope(self.to_k(x).view(B, L, self.n_head, self.head_dim), rope)
        v = self.to_v(x).view(B, L, self.n_head, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, rope, causal: bool, mask: torch.Tensor | None = None):
        """The whole sequence at once (teacher forcing, or a reference recomputation)."""
        q, k, v = self.qkv(x, rope)
        o = _attend(q, k, v, causal, mask, self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(o))                           # (B, L, D)

    def step(self, x, rope, kv: KVCache, start: int, visible: torch.Tensor | None):
        """x (B, n, D) fed at slots [start, start + n): write their keys/values, then attend to the
        written slots [0, start + n); `visible` (n, start + n) masks among them, None: all visible."""
        q, k, v = self.qkv(x, rope)
        k, v = kv.write(start, k, v)                                  # (B, H, start + n, hd)
        return self.proj_drop(self.proj(_attend(q, k, v, False, visible, 0.0)))


class CrossAttention(nn.Module):
    """Cross-decoder attention: own queries (RoPE of the target position), shared keys/values."""

    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.proj_drop = nn.Dropout(cfg.resid_dropout)

    def forward(self, x, k, v, rope, causal: bool, mask: torch.Tensor | None = None):
        """x (B, n, D) queries, k/v (B, H, L, hd), rope (B, n, hd/2, 2) of the target positions."""
        B, n, _ = x.shape
        q = apply_rope(self.to_q(x).view(B, n, self.n_head, self.head_dim), rope).transpose(1, 2)
        o = _attend(q, k, v, causal, mask, self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(o))                           # (B, n, D)


class SelfDecoderBlock(nn.Module):
    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ffn = SwiGLU(cfg.dim, cfg.ffn_hidden, cfg.ffn_dropout)
        self.attn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x, rope, causal: bool, mask=None):
        x = x + self.attn(self.attn_norm(x), rope, causal, mask)
        return x + self.ffn(self.ffn_norm(x))

    def step(self, x, rope, kv: KVCache, start: int, visible):
        x = x + self.attn.step(self.attn_norm(x), rope, kv, start, visible)
        return x + self.ffn(self.ffn_norm(x))


class CrossDecoderBlock(nn.Module):
    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.attn = CrossAttention(cfg)
        self.ffn = SwiGLU(cfg.dim, cfg.ffn_hidden, cfg.ffn_dropout)
        self.attn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, q, k, v, rope, causal: bool, mask=None):
        q = q + self.attn(self.attn_norm(q), k, v, rope, causal, mask)
        return q + self.ffn(self.ffn_norm(q))


class TwoPassDecoder(nn.Module):
    """Self-decoder blocks, the shared cross K/V projection, cross-decoder blocks (official `layers`)."""

    def __init__(self, cfg: ARPGConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.self_dec = nn.ModuleList(SelfDecoderBlock(cfg) for _ in range(cfg.n_layer // 2))
        self.cross_dec = nn.ModuleList(CrossDecoderBlock(cfg) for _ in range(cfg.n_layer // 2))
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.to_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.to_v = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def shared_kv(self, h: torch.Tensor, rope: torch.Tensor):
        """Self-decoder output h (B, L, D) -> cross keys (RoPE of the content positions) and values (B, H, L, hd)."""
        B, L, _ = h.shape
        h = self.norm(h)
        k = apply_rope(self.to_k(h).view(B, L, self.n_head, self.head_dim), rope)
        v = self.to_v(h).view(B, L, self.n_head, self.head_dim)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, q, rope_x, rope_q, causal: bool, self_mask=None, cross_mask=None):
        """x (B, L, D) content, q (B, n, D) queries -> (B, n, D)."""
        for blk in self.self_dec:
            x = blk(x, rope_x, causal, self_mask)                     # (B, L, D)
        k, v = self.shared_kv(x, rope_x)                              # (B, H, L, hd)
        for blk in self.cross_dec:
            q = blk(q, k, v, rope_q, causal, cross_mask)              # (B, n, D)
        return q

    def step(self, x, q, rope_x, rope_q, cache: ARPGCache, start: int, self_visible, block_steps=None):
        """x (B, n_in, D) fed at slots [start, start + n_in); q (B, n_q, D) -> (B, n_q, D). Every
        query sees every written slot [0, start + n_in); `self_visible` as in `SelfAttention.step`.
        block_steps: (cached_block_step, cross_block_step) replacements (compiled: `ARPGFastCall`)."""
        self_step, cross_step = block_steps or (cached_block_step, cross_block_step)
        for blk, kv in zip(self.self_dec, cache.self_kv):
            x = self_step(blk, x, rope_x, kv.k, kv.v, start, self_visible)   # (B, n_in, D)
        k, v = cache.cross_kv.write(start, *self.shared_kv(x, rope_x))   # (B, H, start + n_in, hd)
        for blk in self.cross_dec:
            q = cross_step(blk, q, k, v, rope_q)
        return q


def cross_block_step(blk: CrossDecoderBlock, q, k, v, rope):
    """One cross-decoder block at a decoding step: the queries attend to every written shared slot."""
    return blk(q, k, v, rope, False)


class ARPG(nn.Module):
    def __init__(self, config: ARPGConfig):
        super().__init__()
        self.config = cfg = config
        # 1. token space: image tokens, [MASK], classes, null class, extra (one table, official layout)
        self.embeddings = nn.Embedding(cfg.embedding_rows, cfg.dim)
        self.embed_drop = nn.Dropout(cfg.token_dropout)
        # 2. two-pass decoder: self-decoder (content) -> shared K/V -> cross-decoder (queries)
        self.layers = TwoPassDecoder(cfg)
        # 3. output head (bias-free, not tied)
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # 4. 2-D RoPE table (cls_token_num + N, hd/2, 2): a function of the config, so not saved.
        #    A model built with a larger grid than it was trained on simply has more rows.
        self.register_buffer("rope", grid_rope(cfg), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        llama_init_(self, self.config.init_std, self.head)   # official: normal weights, zero head

    # ---------------------------------------------------------------- token space and positions
    def class_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels 0..K (K = null) -> embedding rows V + 1 + label."""
        return labels + self.config.vocab_size + 1

    def _rope(self, rows: torch.Tensor) -> torch.Tensor:
        """RoPE rows (B, L) (0 = class slot, 1 + p = grid position p) -> (B, L, hd/2, 2)."""
        return self.rope[rows]

    def _queries(self, batch: int, n: int) -> torch.Tensor:
        """n copies of the [MASK] embedding per sample: (B, n, D)."""
        return self.embeddings.weight[self.config.mask_id].expand(batch, n, -1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return float_logits(self.head(self.norm(h)))                  # (B, n, V)

    def logits(self, input_ids, input_rows, query_rows, causal: bool = False, self_mask=None, cross_mask=None):
        """The two passes without a cache (the reference every decoding path is tested against).

        input_ids (B, L) embedding rows (`class_ids` for the class slot, token ids otherwise),
        input_rows (B, L) their RoPE rows, query_rows (B, n) the RoPE rows of the targets.
        `causal` (square only) or the boolean masks self_mask (L, L) / cross_mask (n, L) choose
        what each token and query sees. Returns float32 logits (B, n, V).
        """
        x = self.embed_drop(self.embeddings(input_ids))               # (B, L, D)
        q = self._queries(*query_rows.shape)                          # (B, n, D)
        h = self.layers(x, q, self._rope(input_rows), self._rope(query_rows), causal, self_mask, cross_mask)
        return self._logits(h)

    # ---------------------------------------------------------------- training
    def draw_orders(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """A fresh random permutation of the N grid positions per sample: (B, N) int64, drawn from
        `generator` (on its device unless `device` is given)."""
        device = device if device is not None else (generator.device if generator is not None else None)
        return torch.rand(batch, self.config.num_tokens, generator=generator, device=device).argsort(dim=1)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, orders: torch.Tensor, causal: bool = True):
        """Teacher forcing in a given order.

        tokens (B, N) int64 in raster order, labels (B,) (null class K allowed), orders (B, N) or
        (N,) permutations of 0..N-1 (one per sample; see `draw_orders`). Returns float32 logits
        (B, N, V), where logits[b, i] predicts tokens[b, orders[b, i]], and the mean
        cross-entropy. `causal=True` is the training objective (official training); label dropout
        for CFG is the caller's (`drop_labels`).
        """
        B, N = tokens.shape
        if N != self.config.num_tokens:
            raise ValueError(f"ARPG expects {self.config.num_tokens} tokens per image, got {N}")
        check_labels(labels, self.config.num_classes)
        orders = orders.to(tokens.device).expand(B, N)                # (B, N)
        targets = tokens.gather(1, orders)                            # (B, N) in generation order
        ids = torch.cat([self.class_ids(labels)[:, None], targets[:, :-1]], dim=1)   # (B, N): [class, t_o0 .. t_oN-2]
        rows = torch.cat([orders.new_zeros(B, 1), orders[:, :-1] + 1], dim=1)        # (B, N): [0, 1+o0 .. 1+oN-2]
        logits = self.logits(ids, rows, orders + 1, causal=causal)    # (B, N, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    # ---------------------------------------------------------------- decoding
    def allocate_cache(self, batch: int, device=None, dtype=None) -> ARPGCache:
        p = self.embeddings.weight
        device, dtype = device or p.device, dtype or p.dtype
        cfg = self.config
        L = cfg.cache_len
        return ARPGCache(
            self_kv=[KVCache.allocate(batch, cfg.n_head, L, cfg.head_dim, device, dtype) for _ in self.layers.self_dec],
            cross_kv=KVCache.allocate(batch, cfg.n_head, L, cfg.head_dim, device, dtype),
            slots=torch.arange(L, device=device))

    def prefill(self, labels: torch.Tensor, query_positions: torch.Tensor, cache: ARPGCache,
                known: torch.Tensor | None = None, known_positions: torch.Tensor | None = None,
                causal: bool = True, block_steps=None) -> torch.Tensor:
        """Start decoding: the class token at slot 0 (+ K known tokens at slots 1..K) in one pass.

        labels (B,); known (B, K) token ids at grid positions known_positions (B, K);
        query_positions (B, n) grid positions to predict. `causal`: whether the known tokens see
        only those before them (as in training) or each other. Returns float32 logits (B, n, V).
        """
        check_labels(labels, self.config.num_classes)
        ids = self.class_ids(labels)[:, None]                         # (B, 1)
        rows = torch.zeros_like(ids)
        if known is not None and known.shape[1] > 0:
            ids = torch.cat([ids, known], dim=1)                      # (B, 1 + K)
            rows = torch.cat([rows, known_positions + 1], dim=1)
        return self._decode(ids, rows, query_positions + 1, cache, 0, causal, block_steps)

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, query_positions: torch.Tensor,
                    cache: ARPGCache, start: int, causal: bool = False, block_steps=None) -> torch.Tensor:
        """One parallel decoding step.

        tokens (B, n_in) decided at the previous step, at grid positions `positions` (B, n_in),
        are written at cache slots [start, start + n_in) (start = 1 + tokens fed so far); then the
        queries for grid positions `query_positions` (B, n_q) attend to every written slot.
        `causal=False` is the official sampler (the tokens of one step see each other).
        Returns float32 logits (B, n_q, V).

        Shapes: the cache and weights are fixed; n_in, n_q (the schedule's tokens per step) and the
        keys attended to (the start + n_in written slots) vary along a schedule, which is fixed for
        a given step count, so a whole sampling call can be captured as one CUDA graph.
        """
        if start < 1:
            raise ValueError("decode_step: slot 0 is the class token; start decoding with prefill")
        return self._decode(tokens, positions + 1, query_positions + 1, cache, start, causal, block_steps)

    def _decode(self, ids, rows, query_rows, cache: ARPGCache, start: int, causal: bool,
                block_steps=None) -> torch.Tensor:
        n = ids.shape[1]
        end = start + n
        if end > cache.length:
            raise ValueError(f"writing slots [{start}, {end}) overflows the cache of {cache.length} slots")
        self_visible = None                                           # the tokens fed see each other ...
        if causal:                                                    # ... or only those before them
            fed = torch.arange(start, end, device=cache.slots.device)[:, None]
            self_visible = cache.slots[None, :end] <= fed             # (n, end)
        x = self.embeddings(ids)                                      # (B, n, D)
        q = self._queries(*query_rows.shape).clone()                  # (B, n_q, D), a plain tensor, so that compiled
        # block steps (`ARPGFastCall`) see the same layout at every cross-decoder block
        h = self.layers.step(x, q, self._rope(rows), self._rope(query_rows), cache, start, self_visible, block_steps)
        return self._logits(h)                                        # (B, n_q, V)


# ---------------------------------------------------------------- the fast path (one CUDA graph per call)
class ARPGFastCall:
    """What ARPG's whole-call graph runs (`sample.graphs.GraphedCallSampler`): its two block steps
    compiled once each, dynamic in the tokens and queries per step (the schedule varies them; a few
    compilations then cover every step). compile_blocks=False: the eager steps."""

    def __init__(self, model: ARPG, compile_blocks: bool = True, compile_mode: str | None = None):
        # fullgraph=False: a kernel the compiler cannot trace splits the region instead of failing
        self.block_steps = (tuple(torch.compile(f, fullgraph=False, dynamic=True, mode=compile_mode)
                                  for f in (cached_block_step, cross_block_step)) if compile_blocks else None)

    @staticmethod
    def setting():
        return contextlib.nullcontext()


# ---------------------------------------------------------------- the family record
def train_inputs(model: ARPG, tokens, labels, quantizer=None, rng=None):
    """Training sees a fresh random order per sample, drawn from `rng`."""
    return tokens, labels, model.draw_orders(tokens.shape[0], generator=rng).to(tokens.device)


def convert(weights, official_config=None, tokenizer=None, **options):
    """Official ARPG weights (arpg_300m.pt ...; + an already converted VQ tokenizer) -> (ARPG, tokenizer)."""
    from ..convert.arpg import load_official_arpg
    return load_official_arpg(weights, official_config, **options), tokenizer


# Official counts from instantiating hp-l33/ARPG's ARPG_models.
FAMILY = Family(
    name="arpg", description="ARPG: random-order parallel decoding with target-aware queries", config=ARPGConfig,
    model=ARPG,
    sizes={
        "arpg-l": Size(dict(dim=1024, n_layer=24, n_head=16), "ARPG-L", 319_845_376),
        "arpg-xl": Size(dict(dim=1280, n_layer=36, n_head=20), "ARPG-XL", 718_997_760),
        "arpg-xxl": Size(dict(dim=1536, n_layer=48, n_head=24), "ARPG-XXL", 1_302_449_664),
        # tests / CPU demo (own design): the shapes of aim-tiny / gpt-tiny
        "arpg-tiny": Size(dict(dim=64, n_layer=4, n_head=4, multiple_of=32, vocab_size=256, num_classes=10,
                               num_tokens=16), "tests: 4 layers, 64 wide"),
        "arpg-small": Size(dict(dim=256, n_layer=8, n_head=4, multiple_of=64, num_tokens=64, vocab_size=1024,
                                num_classes=9), "demo study: 4 + 4 layers, 256 wide"),
    },
    tokenizer="vq", fit=KINDS["vq"].fit, sampler=RANDOM_ORDER, fast=ARPGFastCall,
    edits=frozenset({"inpaint", "outpaint", "canvas"}), sampling_options=frozenset({"steps", "schedule", "cfg_schedule"}),
    official_sampling=dict(steps=64),
    train_inputs=train_inputs, convert=convert, convert_options=("vq",),
    convert_help="arpg_300m.pt (+ --vq vq_ds16_c2i.pt; its pickled argparse args are allow-listed)", parity=("arpg",))
