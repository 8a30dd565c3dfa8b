"""LlamaGen GPT (Sun et al. 2024): class-conditional raster-order generation with a LLaMA transformer.

The baseline next to AiM: the same token sequence, a transformer instead of Mamba2.

    [c, e(t_0), e(t_1), ..., e(t_{N-2})]                                   (length N)

c is the class embedding, e the token embedding (the head is a separate matrix). Sequence
position p uses row p of a 2-D RoPE table (`layers.rope`): `cls_token_num` class rows
first (zeros in the official code, which zeroes the class slot's query and key), then the
grid positions in raster order, so image token j (position 1 + j) gets grid position j
when cls_token_num = 1. Position i predicts t_i.

Blocks are pre-norm LLaMA blocks without biases:
    x = x + Attn(RMSNorm(x))      causal, 2-D RoPE on q/k, grouped-query when n_kv_head < n_head
    x = x + SwiGLU(RMSNorm(x))
then RMSNorm and the output projection. Decoding keeps a static KV cache per block,
written by position (`allocate_cache`, `prefill`, `step`, the protocol of `sample.raster`).

Official quirk kept for parity: the c2i class embedder yields ONE vector whatever
`cls_token_num` is, so the class always takes position 0 only and `cls_token_num > 1` merely
puts more zero rows in front of the RoPE grid (image tokens 0 .. cls_token_num-2 then sit on
zero rows). Official training then slices its logits to `[:, cls_token_num - 1:]`; ours are
never sliced (position i predicts t_i).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..family import Family, Size, token_inputs
from ..layers.attention import KVCache, cached_block_step
from ..layers.embed import check_labels
from ..layers.llama import LlamaGridConfig, float_logits, grid_rope
from ..layers.mlp import SwiGLU, llama_init_
from ..layers.norm import RMSNorm
from ..layers.rope import apply_rope
from ..sample.raster import RASTER
from ..tokenizers import KINDS


@dataclass
class GPTConfig(LlamaGridConfig):
    """LlamaGridConfig with LlamaGen GPT-B's defaults, grouped-query attention and an optional null class.
    cls_token_num: RoPE rows reserved for the class slot (see the module docstring)."""
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None       # grouped-query attention: key/value heads (None: n_head)
    null_class: bool = True            # class row num_classes is a learned null class (CFG); official: class_dropout_prob > 0

    def __post_init__(self):
        super().__post_init__()
        name = type(self).__name__
        if self.n_head % self.kv_heads:
            raise ValueError(f"{name}: n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")
        if self.class_dropout > 0 and not self.null_class:
            raise ValueError(f"{name}: class_dropout {self.class_dropout} > 0 needs the null class (null_class=True)")

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def seq_len(self) -> int:
        """Longest sequence the model ever sees: the class slot and the first N - 1 tokens."""
        return self.num_tokens


@dataclass
class GPTCache:
    """Everything decoding needs, preallocated once per batch.

    layers:    one KVCache per block, k and v (B, n_kv_head, seq_len, head_dim), written by position
    positions: (seq_len,) 0 .. seq_len-1, compared with the current position to mask unwritten slots
    """
    layers: list[KVCache]
    positions: torch.Tensor


class ClassEmbedding(nn.Module):
    """Class table (+ the null-class row). Dropping labels for CFG is the caller's job."""

    def __init__(self, num_classes: int, dim: int, null_class: bool):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(null_class), dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)                          # (B, D)


class Attention(nn.Module):
    """Causal multi-head attention with 2-D RoPE; kv head j serves query heads j*g .. (j+1)*g - 1."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.resid_dropout = nn.Dropout(cfg.resid_dropout)

    def qkv(self, x: torch.Tensor, rope: torch.Tensor):
        """x (B, L, D), rope (L, hd/2, 2) -> q (B, H, L, hd), k and v (B, Hkv, L, hd)."""
        B, L, _ = x.shape
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.wqkv(x).split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
        q = apply_rope(q.view(B, L, H, hd), rope)
        k = apply_rope(k.view(B, L, Hkv, hd), rope)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(B, L, Hkv, hd).transpose(1, 2)

    def attend(self, q, k, v, causal: bool, mask: torch.Tensor | None = None, dropout: float = 0.0):
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout,
                                           enable_gqa=self.n_kv_head != self.n_head)  # (B, H, L, hd)
        return self.resid_dropout(self.wo(o.transpose(1, 2).flatten(2)))           # (B, L, D)

    def forward(self, x, rope):
        """Teacher forcing over positions 0 .. L-1."""
        q, k, v = self.qkv(x, rope)
        return self.attend(q, k, v, causal=True, dropout=self.attn_dropout if self.training else 0.0)

    def prefill(self, x, rope, cache: KVCache):
        """Positions 0 .. L-1 of a fresh sequence; their keys/values go to cache slots [0, L)."""
        q, k, v = self.qkv(x, rope)
        cache.write(0, k, v)
        return self.attend(q, k, v, causal=True)

    def step(self, x, rope, cache: KVCache, pos: int, visible: torch.Tensor):
        """x (B, 1, D) at position `pos`; attends to the whole fixed-size cache, `visible` (1, seq_len)
        masks the slots after pos (static shapes: nothing is sliced by position)."""
        q, k, v = self.qkv(x, rope)
        cache.write(pos, k, v)
        return self.attend(q, cache.k, cache.v, causal=False, mask=visible)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = SwiGLU(cfg.dim, cfg.ffn_hidden, cfg.ffn_dropout)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x, rope):
        x = x + self.attention(self.attention_norm(x), rope)
        return x + self.feed_forward(self.ffn_norm(x))

    def prefill(self, x, rope, cache: KVCache):
        x = x + self.attention.prefill(self.attention_norm(x), rope, cache)
        return x + self.feed_forward(self.ffn_norm(x))

    def step(self, x, rope, cache: KVCache, pos: int, visible: torch.Tensor):
        x = x + self.attention.step(self.attention_norm(x), rope, cache, pos, visible)
        return x + self.feed_forward(self.ffn_norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        # 1. embeddings: classes (+ null), tokens
        self.cls_embedding = ClassEmbedding(cfg.num_classes, cfg.dim, cfg.null_class)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout)
        # 2. transformer blocks
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # 3. head (not tied to the token embedding)
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # 4. 2-D RoPE table (cls_token_num + N, hd/2, 2): a function of the config, so not saved
        self.register_buffer("rope", grid_rope(cfg), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        llama_init_(self, self.config.init_std, self.output)   # official: normal weights, zero head

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return float_logits(self.output(self.norm(x)))                # (B, ..., V)

    # ---------------------------------------------------------------- training
    def forward(self, tokens: torch.Tensor, labels: torch.Tensor):
        """Teacher forcing. tokens (B, N) int64 (N <= num_tokens), labels (B,) (null class allowed).

        Returns logits (B, N, V), where logits[:, i] predicts tokens[:, i], and the mean
        cross-entropy. Label dropout for CFG is the caller's (`drop_labels`).
        """
        B, N = tokens.shape
        if not 1 <= N <= self.config.num_tokens:
            raise ValueError(f"GPT takes 1..{self.config.num_tokens} tokens per image, got {N}")
        c = self.cls_embedding(labels)[:, None]                        # (B, 1, D)
        x = torch.cat([c, self.tok_embeddings(tokens[:, :-1])], dim=1)  # (B, N, D)
        x = self.tok_dropout(x)
        rope = self.rope[:N]                                           # (N, hd/2, 2)
        for layer in self.layers:
            x = layer(x, rope)
        logits = self._logits(x)                                       # (B, N, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        return logits, loss

    # ---------------------------------------------------------------- decoding
    def allocate_cache(self, batch: int, device=None, dtype=None) -> GPTCache:
        p = self.tok_embeddings.weight
        device, dtype = device or p.device, dtype or p.dtype
        cfg = self.config
        return GPTCache(
            layers=[KVCache.allocate(batch, cfg.kv_heads, cfg.seq_len, cfg.head_dim, device, dtype)
                    for _ in self.layers],
            positions=torch.arange(cfg.seq_len, device=device))

    def prefill(self, labels: torch.Tensor, cache: GPTCache, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Start decoding: the class slot (+ optional known leading tokens (B, P)) in one causal pass.

        Returns logits (B, V) of the next token (token 0, or token P with a prefix).
        """
        check_labels(labels, self.config.num_classes, allow_null=self.config.null_class)
        x = self.cls_embedding(labels)[:, None]                        # (B, 1, D)
        if prefix is not None and prefix.shape[1] > 0:
            x = torch.cat([x, self.tok_embeddings(prefix)], dim=1)     # (B, 1 + P, D)
        L = x.shape[1]
        if L > self.config.seq_len:
            raise ValueError(f"prefix of {L - 1} tokens leaves nothing to predict (num_tokens {self.config.num_tokens})")
        rope = self.rope[:L]
        for layer, kv in zip(self.layers, cache.layers):
            x = layer.prefill(x, rope, kv)
        return self._logits(x[:, -1])                                  # (B, V)

    def step(self, tokens: torch.Tensor, cache: GPTCache, index, block_step=None) -> torch.Tensor:
        """Feed image token number `index` (int, or a 0-d device tensor for graph capture) and return
        logits (B, V) for token index + 1. `block_step(layer, x, rope, k, v, pos, visible)` replaces
        `layer.step` (the fast path passes one compiled function that serves every layer)."""
        pos = index + 1                                                # position 0 is the class slot
        x = self.tok_embeddings(tokens)[:, None]                       # (B, 1, D)
        rope = self.rope.index_select(0, pos.reshape(1)) if torch.is_tensor(pos) else self.rope[pos:pos + 1]
        visible = (cache.positions <= pos)[None]                       # (1, seq_len) slots written so far
        for layer, kv in zip(self.layers, cache.layers):
            x = (layer.step(x, rope, kv, pos, visible) if block_step is None
                 else block_step(layer, x, rope, kv.k, kv.v, pos, visible))
        return self._logits(x[:, 0])                                   # (B, V)


# ---------------------------------------------------------------- the fast path (CUDA graphs, sample/fast.py)
class GPTFastDecode:
    """GPT's decode for the raster step sampler: the model's prefill (eager) and its step with one
    compiled block step serving every block (regional compilation; `cached_block_step`)."""
    capture_start = False

    def __init__(self, model: GPT, rows: int, *, compile_blocks: bool = True, compile_mode: str | None = None):
        self.model, self.cache = model, model.allocate_cache(rows)
        # fullgraph=False: a kernel the compiler cannot trace splits the region instead of failing
        self.block_step = (torch.compile(cached_block_step, fullgraph=False, dynamic=False, mode=compile_mode)
                           if compile_blocks else None)

    def start(self, labels: torch.Tensor) -> torch.Tensor:
        return self.model.prefill(labels, self.cache)

    def step(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.model.step(tokens, self.cache, index, block_step=self.block_step)


# ---------------------------------------------------------------- the family record
def convert(weights, official_config=None, tokenizer=None, **options):
    """Official LlamaGen c2i weights (+ an already converted VQ tokenizer to ship with) -> (GPT, tokenizer)."""
    from ..convert.gpt import load_official_gpt
    return load_official_gpt(weights, official_config, **options), tokenizer


# Paper/official table; official counts from instantiating LlamaGen's GPT_models.
FAMILY = Family(
    name="gpt", description="LlamaGen GPT: the raster transformer baseline", config=GPTConfig, model=GPT,
    sizes={
        "gpt-b": Size(dict(dim=768, n_layer=12, n_head=12), "LlamaGen GPT-B", 110_888_448),
        "gpt-l": Size(dict(dim=1024, n_layer=24, n_head=16), "LlamaGen GPT-L", 342_910_976),
        "gpt-xl": Size(dict(dim=1280, n_layer=36, n_head=20), "LlamaGen GPT-XL", 774_699_520),
        # tests / CPU demo (own design): the shapes of aim-tiny
        "gpt-tiny": Size(dict(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=256, num_classes=10,
                              num_tokens=16), "tests: 2 layers, 64 wide"),
        # the demo-scale study (~6.4M parameters, docs/study)
        "gpt-small": Size(dict(dim=256, n_layer=7, n_head=4, num_tokens=64, vocab_size=1024, num_classes=9),
                          "demo study: 7 layers, 256 wide"),
    },
    tokenizer="vq", fit=KINDS["vq"].fit, sampler=RASTER, fast=GPTFastDecode,
    edits=frozenset({"inpaint", "outpaint"}), sampling_options=frozenset({"cfg_interval"}),
    train_inputs=token_inputs, convert=convert, convert_options=("vq",),
    convert_help="c2i_L_256.pt (+ --vq vq_ds16_c2i.pt)", parity=("gpt",))
