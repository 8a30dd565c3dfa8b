"""Mamba2 mixer (Dao & Gu 2024) with the official hyperparameters and state-dict names.

    in_proj -> [z | x B C | dt]
    x B C   -> causal depthwise conv1d -> SiLU
    x       -> SSD scan with scalar decay A per head, dt = softplus(dt + dt_bias), + D * x
    y       -> RMSNorm(y * SiLU(z)) -> out_proj

`forward` runs a whole chunk of tokens (training, prefill, or a continuation
when given a cache: M-VAR carries the state across scales this way); `step`
runs one token. Both read and update an explicit, preallocated `Mamba2Cache`.
A cache allocated with `paired_conv=True` makes `step` run everything between the
two projections as one fused Triton kernel (`kernels/mamba2_step.py`, CUDA decoding).
The scan itself lives in `ssd_ref` (the spec); on CUDA, training and long prefills run it
through our Triton kernels (`kernels/ssd_scan.py`), tested against the spec, and eager CUDA
forwards can run the conv+SiLU and the gated norm as Triton kernels too (`set_kernels`;
`kernels/conv_silu.py`, `kernels/gated_norm.py`; the PyTorch code beside each call is their reference).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .norm import RMSNormGated
from .ssd_fast import ssd_chunked_compiled, ssd_chunked_fast, ssd_chunked_recomputed
from .ssd_history import HISTORY_MAX_PER_STATE, SSMHistory, history_step_
from .ssd_ref import ssd_chunked, ssd_step, ssd_step_


@dataclass
class Mamba2Cache:
    """Recurrent state of one mixer: O(1) in the sequence length.

    conv: (B, conv_dim, d_conv - 1) the last inputs of the causal conv
    ssm:  (B, nheads, headdim, d_state) the SSM state, stored in the model's dtype as the official
          cache does (bf16 halves the bytes decoding streams per token); updated in float32
    conv_pair: None, or (2, B, conv_dim, d_conv - 1) with conv == conv_pair[0]: the double-buffered
          history of the fused decode kernel (step t reads conv_pair[t % 2], writes the other)
    history: None, or the SSM's token history (`ssd_history`): decoding reads that instead of a state,
          and `ssm` is empty (CPU decoding of short sequences, see `Mamba2.allocate_cache`)
    """
    conv: torch.Tensor
    ssm: torch.Tensor
    conv_pair: torch.Tensor | None = None
    history: SSMHistory | None = None

    def reset(self) -> None:
        (self.conv if self.conv_pair is None else self.conv_pair).zero_()
        self.ssm.zero_()
        if self.history is not None:
            self.history.reset()


COMPILED_MIN_LEN = 64   # scan_impl "compiled": shorter inputs run eagerly; "auto": shorter prefills use the reference
SCAN_IMPLS = ("auto", "reference", "triton", "fast", "compiled")


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the scan: float32, or float64 for float64 inputs (tests)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Mamba2(nn.Module):
    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 256,
                 A_init_range=(1.0, 16.0), dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 norm_eps: float = 1e-5, D_has_hdim: bool = False, rmsnorm: bool = True,
                 norm_before_gate: bool = False, dt_limit=(0.0, float("inf"))):
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"Mamba2: expand*d_model = {d_inner} is not a multiple of headdim = {headdim}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"Mamba2: nheads = {nheads} is not a multiple of ngroups = {ngroups}")
        self.d_model, self.d_state, self.d_conv, self.headdim = d_model, d_state, d_conv, headdim
        self.d_inner, self.nheads, self.ngroups, self.chunk_size = d_inner, nheads, ngroups, chunk_size
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.dt_range = (dt_min, dt_max, dt_init_floor)
        self.scan_chunk: int | None = None   # chunk of the reference scan if not chunk_size (see set_scan_chunk)
        self.scan_impl = "auto"              # see set_scan_impl
        self.use_kernels = False             # eager CUDA: conv+SiLU and gated norm in Triton (see _kernels_here)
        self.dt_limit = tuple(dt_limit)
        self.A_init_range = A_init_range

        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(nheads))
        self.A_log = nn.Parameter(torch.empty(nheads))
        self.D = nn.Parameter(torch.empty(d_inner if D_has_hdim else nheads))  # skip per channel or per head
        self.norm = (RMSNormGated(d_inner, eps=norm_eps, group_size=d_inner // ngroups,
                                  norm_before_gate=norm_before_gate) if rmsnorm else None)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Official init: dt log-uniform in [dt_min, dt_max] stored through an inverse
        softplus; A uniform in A_init_range stored as log; D = 1. These three are
        excluded from weight decay by the optimizer (flag `_no_weight_decay`)."""
        dt_min, dt_max, floor = self.dt_range
        dt = torch.exp(torch.rand_like(self.dt_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))        # softplus(dt_bias) == dt
        self.A_log.copy_(torch.log(torch.empty_like(self.A_log).uniform_(*self.A_init_range)))
        self.D.fill_(1.0)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

    def allocate_cache(self, batch: int, device=None, dtype=None, paired_conv: bool = False,
                       max_len: int | None = None, ssm_form: str = "auto") -> Mamba2Cache:
        """paired_conv: decode through the fused kernel (see `Mamba2Cache.conv_pair`). max_len: the most tokens
        this cache will see, where known; ssm_form: "state" (the recurrent state), "history" (the token
        history, `ssd_history`: needs max_len) or "auto": the history on a CPU for sequences of at most
        HISTORY_MAX_PER_STATE x d_state tokens, where it is the faster step, else the state."""
        if paired_conv and self.norm is not None and self.norm.norm_before_gate:
            raise ValueError("the fused Mamba2 decode kernel gates before the norm; norm_before_gate=True is not supported")
        if ssm_form not in ("auto", "state", "history"):
            raise ValueError(f"ssm_form is 'auto', 'state' or 'history', not {ssm_form!r}")
        device = torch.device(device if device is not None else self.in_proj.weight.device)
        dtype = dtype or self.in_proj.weight.dtype
        if ssm_form == "auto":
            short = max_len is not None and max_len <= HISTORY_MAX_PER_STATE * self.d_state
            ssm_form = "history" if short and device.type == "cpu" and not paired_conv else "state"
        if ssm_form == "history" and (max_len is None or paired_conv):
            raise ValueError("an SSM history cache needs max_len and no paired conv")
        conv = torch.zeros(2 if paired_conv else 1, batch, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype)
        history = None if ssm_form == "state" else SSMHistory.allocate(
            batch, self.nheads, self.headdim, self.ngroups, self.d_state, max_len, device, _acc(dtype))
        ssm_shape = (batch, self.nheads, self.headdim, self.d_state if history is None else 0)
        return Mamba2Cache(conv=conv[0], ssm=torch.zeros(ssm_shape, device=device, dtype=dtype),
                           conv_pair=conv if paired_conv else None, history=history)

    def _split(self, zxbcdt):
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _ssm_inputs(self, xBC):
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = x.unflatten(-1, (self.nheads, self.headdim))            # (..., h, p)
        B = B.unflatten(-1, (self.ngroups, self.d_state))           # (..., g, n)
        C = C.unflatten(-1, (self.ngroups, self.d_state))
        return x, B, C

    def _dt_A(self, dt, acc):
        dt = F.softplus(dt.to(acc) + self.dt_bias.to(acc))
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        return dt, -torch.exp(self.A_log.to(acc))

    def _output(self, y, x, z):
        """y, x (..., h, p) -> D skip, gated norm, out_proj -> (..., d_model)."""
        D = self.D.to(y.dtype)
        y = y + x.to(y.dtype) * (D.view(self.nheads, self.headdim) if D.numel() == self.d_inner else D[:, None])
        y = y.flatten(-2).to(z.dtype)                              # (..., d_inner)
        if self.norm is None:
            y = y * F.silu(z)
        elif not self.norm.norm_before_gate and kernels.gated_rms_norm is not None and self._kernels_here(y):
            y = kernels.gated_rms_norm(y, z, self.norm.weight, self.norm.group_size, self.norm.eps)   # self.norm, fused
        else:
            y = self.norm(y, z)
        return self.out_proj(y)

    def _kernels_here(self, t: torch.Tensor) -> bool:
        """Whether the conv+SiLU and the gated norm run as our Triton kernels (`kernels/conv_silu.py`,
        `kernels/gated_norm.py`, each tested against the PyTorch code beside its call): eager CUDA only,
        and opt-in (`set_kernels`): checked on an H200 (bench/results/h200_run24_training_kernels_checks.json),
        but an eager step with them is slower than a compiled one (docs/speed.md). A compiled model keeps
        the PyTorch code, which the compiler fuses itself."""
        return (self.use_kernels and t.is_cuda and not torch.compiler.is_compiling()
                and kernels.kernels_allowed())

    def forward(self, u: torch.Tensor, cache: Mamba2Cache | None = None) -> torch.Tensor:
        """u (B, L, d_model) -> (B, L, d_model). With a cache, continue from its state and update it."""
        Bsz, L, _ = u.shape
        z, xBC, dt = self._split(self.in_proj(u))                  # (B, L, d_inner), (B, L, conv_dim), (B, L, h)

        if cache is None and kernels.conv_silu is not None and self._kernels_here(u):
            xBC = kernels.conv_silu(xBC, self.conv1d.weight[:, 0], self.conv1d.bias)   # below, fused
        else:
            # causal depthwise conv: left context is the cache's last inputs (zeros at the start)
            history = (cache.conv.transpose(1, 2) if cache is not None else
                       xBC.new_zeros(Bsz, self.d_conv - 1, self.conv_dim))   # (B, d_conv - 1, conv_dim)
            xBC = torch.cat([history.to(xBC.dtype), xBC], dim=1)   # (B, d_conv - 1 + L, conv_dim)
            if cache is not None:
                cache.conv.copy_(xBC[:, -(self.d_conv - 1):].transpose(1, 2))
            xBC = F.silu(self._depthwise_conv(xBC))                # (B, L, conv_dim)

        x, B, C = self._ssm_inputs(xBC)                            # (B, L, h, p), (B, L, g, n) x2
        dt, A = self._dt_A(dt, _acc(u.dtype))                      # (B, L, h), (h,)
        history = None if cache is None else cache.history
        if history is not None and history.filled:
            raise ValueError("a Mamba2 history cache takes a whole sequence only at its start; feed later tokens "
                             "with step() or allocate a state cache (ssm_form='state')")
        y, final_state = self._scan(L)(x, dt, A, B, C, self.scan_chunk or self.chunk_size,
                                      initial_state=cache.ssm if history is None and cache is not None else None)
        if history is not None:
            history.append_(x, dt, A, B)
        elif cache is not None:
            cache.ssm.copy_(final_state)
        return self._output(y, x, z)

    def _depthwise_conv(self, xBC: torch.Tensor) -> torch.Tensor:
        """The causal depthwise conv over (B, d_conv - 1 + L, conv_dim) with its left context -> (B, L, conv_dim).
        Eagerly the library's depthwise conv1d; when compiled, the same sum of d_conv shifted products,
        written out so the compiler fuses it into one elementwise kernel (and its backward into a few):
        the depthwise conv1d kernels are slow (53 us per M-VAR layer, bench/results/
        h100_run9_profile_mvar_d16_fast.txt), and a compiled graph calls them as opaque kernels. The sum
        runs along time in the (B, L, conv_dim) layout, so its output is row-major as the scan reads it
        (a channel-major output cost a transposing copy of x, B and C in each direction)."""
        w, b = self.conv1d.weight, self.conv1d.bias                # (conv_dim, 1, d_conv), (conv_dim,)
        if not torch.compiler.is_compiling():
            return F.conv1d(xBC.transpose(1, 2), w, b, groups=self.conv_dim).transpose(1, 2)
        L = xBC.shape[1] - (self.d_conv - 1)
        w = w[:, 0].to(xBC.dtype)                                  # as autocast would run the conv
        out = sum(xBC[:, k:k + L] * w[:, k] for k in range(self.d_conv))
        return out if b is None else out + b.to(xBC.dtype)

    def _scan(self, length: int):
        """The scan for an input of `length` tokens now (see `choose_scan`). Under capture a CUDA graph
        gets the reference. A compiled training graph is never captured, so it does not ask: the query is
        a graph break for torch.compile, which split compiled training at every layer (a compiled AiM-B
        forward: 6 graphs, now 1; bench/results/h200_run26c_graph_breaks.json)."""
        training, compiling = torch.is_grad_enabled(), torch.compiler.is_compiling()
        cuda = self.in_proj.weight.is_cuda and ((training and compiling)
                                                or not torch.cuda.is_current_stream_capturing())
        return choose_scan(self.scan_impl, length, cuda=cuda, training=training)

    def step(self, u: torch.Tensor, cache: Mamba2Cache, index=None) -> torch.Tensor:
        """One token: u (B, d_model) -> (B, d_model); updates the cache in place.

        With a paired cache (`allocate_cache(paired_conv=True)`) this is the fused kernel and
        `index` (the step number, int or 0-d tensor) picks the conv buffer."""
        if cache.conv_pair is not None:
            return self._step_fused(u, cache, index)
        z, xBC, dt = self._split(self.in_proj(u))                  # (B, d_inner), (B, conv_dim), (B, h)

        xBC = F.silu(self._conv_step(cache.conv, xBC)).to(u.dtype)  # (B, conv_dim)

        x, B, C = self._ssm_inputs(xBC)                            # (B, h, p), (B, g, n) x2
        dt, A = self._dt_A(dt, _acc(cache.ssm.dtype))              # (B, h), (h,)
        if cache.history is not None:
            y = history_step_(cache.history, x, dt, A, B, C)       # the same math from the token history
        elif kernels.ssm_step_inplace is not None and x.is_cuda and kernels.kernels_allowed():
            y = kernels.ssm_step_inplace(cache.ssm, x, dt, A, B, C)   # fused: the state is read and written once
        elif cache.ssm.dtype == dt.dtype and cache.ssm.is_contiguous() and not torch.is_grad_enabled():
            y = ssd_step_(cache.ssm, x, dt, A, B, C)                 # the same math, the state updated in place
        else:                                                      # lower precision than dt, or autograd
            y, new_state = ssd_step(cache.ssm.to(dt.dtype), x, dt, A, B, C)
            cache.ssm.copy_(new_state)
        return self._output(y, x, z)

    def _conv_step(self, conv: torch.Tensor, xBC: torch.Tensor) -> torch.Tensor:
        """The causal depthwise conv at one token: conv (B, conv_dim, d_conv - 1) the previous inputs, oldest
        first; xBC (B, conv_dim) the new one -> sum_k w_k input_{t - d_conv + 1 + k} (+ bias) (B, conv_dim).
        Shifts the new input into `conv`. Written tap by tap: a window concatenated along the last dimension
        and summed over it cost 5x as much on a CPU."""
        w, K = self.conv1d.weight[:, 0], self.d_conv                 # (conv_dim, d_conv)
        xBC = xBC.to(conv.dtype)
        out = xBC * w[:, -1] if self.conv1d.bias is None else torch.addcmul(self.conv1d.bias, xBC, w[:, -1])
        for k in range(K - 1):
            out = out.addcmul(conv[:, :, k], w[:, k])
        for k in range(K - 2):                                       # shift left, oldest dropped
            conv[:, :, k].copy_(conv[:, :, k + 1])
        conv[:, :, K - 2].copy_(xBC)
        return out

    def _step_fused(self, u, cache: Mamba2Cache, index) -> torch.Tensor:
        g = self.fused_core(self.in_proj(u), cache, index)
        return self.out_proj(self.norm(g, None) if self.norm is not None else g)

    def fused_core(self, zxbcdt: torch.Tensor, cache: Mamba2Cache, index) -> torch.Tensor:
        """Everything between the projections at one decoding step, as one Triton kernel (paired
        cache): zxbcdt (B, in_proj outputs) -> g = y * SiLU(z) (B, d_inner), the gated norm's input."""
        if kernels.mamba2_step_fused is None:
            raise RuntimeError("a paired Mamba2 cache needs the fused Triton decode kernel (Triton is not importable)")
        if index is None:
            raise ValueError("Mamba2.step with a paired cache needs the step index")
        if not torch.is_tensor(index):
            index = torch.tensor(index, device=zxbcdt.device)
        return kernels.mamba2_step_fused(
            zxbcdt.contiguous(), cache.conv_pair, cache.ssm, index, self.conv1d.weight[:, 0], self.conv1d.bias,
            self.dt_bias, self.A_log, self.D, ngroups=self.ngroups, dt_limit=self.dt_limit)


def choose_scan(impl: str, length: int, cuda: bool, training: bool):
    """The scan function for `scan_impl` = impl. "auto" on CUDA (outside graph capture and
    `kernels.reference_only()`): our Triton scan (`kernels/ssd_scan.py`) for training, eager or inside a
    torch.compile'd model, and for prefills of COMPILED_MIN_LEN tokens or more. In the compiled AiM-L step
    (batch 64 x 256, bf16, H200) it gives 80.4k tokens/s against 77.3k for the compiled tensor-core PyTorch
    scan, and compiles faster (bench/results/h200_run27*_training.json, timed once the
    graph no longer broke at every layer; with the breaks, run25, the PyTorch scan had been faster).
    Without Triton, that PyTorch scan for training. The reference everywhere else (CPU, short prefills and
    decoding, capture).
    Named: "triton"; "fast" the tensor-core formulation in PyTorch (compiled, its intermediates recomputed
    in the backward pass, when a backward graph is built; eager without); "compiled" compiles it for
    inputs of COMPILED_MIN_LEN tokens or more (one compilation per length) and runs shorter ones eagerly."""
    triton_scan = kernels.ssd_chunked_triton
    if impl == "auto" and not kernels.kernels_allowed():     # inside kernels.reference_only()
        impl = "reference"
    if impl == "auto":
        if cuda and training:
            impl = "triton" if triton_scan is not None else "fast"
        elif cuda and triton_scan is not None and length >= COMPILED_MIN_LEN:
            impl = "triton"
        else:
            impl = "reference"
    if impl == "reference":
        return ssd_chunked
    if impl == "triton":
        if triton_scan is None:
            raise RuntimeError("scan_impl 'triton' needs Triton (pip install triton) and a GPU")
        return triton_scan
    if training:
        return ssd_chunked_recomputed
    return ssd_chunked_compiled if impl == "compiled" and length >= COMPILED_MIN_LEN else ssd_chunked_fast


def set_scan_impl(model: nn.Module, impl: str) -> None:
    """Pick the scan of every Mamba2 in `model`: "auto" (default), "reference", "triton", "fast" or
    "compiled" (see `Mamba2._scan`)."""
    if impl not in SCAN_IMPLS:
        raise ValueError(f"scan implementation must be one of {', '.join(SCAN_IMPLS)}, not {impl!r}")
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.scan_impl = impl


@contextlib.contextmanager
def scan_impl(model: nn.Module, impl: str, chunk: int | None = None):
    """`set_scan_impl` (and `set_scan_chunk` when `chunk` is given) for the duration of a block, e.g.
    while a sampler captures its graph; the previous settings come back after it."""
    before = [(m, m.scan_impl, m.scan_chunk) for m in model.modules() if isinstance(m, Mamba2)]
    set_scan_impl(model, impl)
    if chunk is not None:
        set_scan_chunk(model, chunk)
    try:
        yield
    finally:
        for m, old_impl, old_chunk in before:
            m.scan_impl, m.scan_chunk = old_impl, old_chunk


def set_kernels(model: nn.Module, on: bool) -> None:
    """Use (or not, the default) the Triton conv+SiLU and gated norm in eager CUDA forwards
    (see `Mamba2._kernels_here`)."""
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.use_kernels = on


def set_scan_chunk(model: nn.Module, chunk: int | None) -> None:
    """Run every Mamba2 scan of `model` in chunks of `chunk` (None: the config's chunk_size).

    The result does not depend on the chunk (tested); the memory of the reference scan does: its
    quadratic in-chunk term holds (batch, heads, length, chunk) values, so training uses small chunks.
    """
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.scan_chunk = chunk
