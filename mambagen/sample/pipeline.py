"""Class labels -> images: the family's sampler followed by the tokenizer's decoder.

Every command samples here (`sample`, `sample-many`, `edit`, training's grids, `bench`): the model's
family record names its sampler - the reference loop, and on CUDA its fast path (graphed steps or a
graphed call with the family's compiled or fused steps) - so the commands cannot drift apart.

    sampler = Sampler(model, tokenizer, SamplingConfig(cfg_scale=4.0))
    images, tokens = sampler.sample(labels, rng)        # rng: a torch.Generator or a RowStreams

A fast sampler is built once per model, batch size, setting and kind of rng and kept for later calls
(`fast_sampler`). Compiling the block steps as well (compile=True) costs tens of seconds once and pays
over many batches (docs/speed.md).
"""
from __future__ import annotations

import weakref

import torch

from ..layers import kernels
from ..models.registry import family_of
from ..tokenizers import kind_of
from .config import SamplingConfig
from .streams import RowStreams


def check_pair(model, tokenizer, grid: bool = False) -> None:
    """The generator must model the tokenizer's ids: its family's tokenizer kind, the tokenizer's
    vocabulary (and scales and code width, for multi-scale tokenizers). grid=True (a tokenizer given
    on its own, not shipped with the generator): also its tokens per image at its image size."""
    family, kind = family_of(model), kind_of(tokenizer)
    if kind.name != family.tokenizer:
        raise ValueError(f"a {kind.name} tokenizer does not fit a {family.name} generator (it models "
                         f"{family.tokenizer} ids)")
    fit = family.fit(tokenizer)
    if not grid:
        fit.pop("num_tokens", None)    # a VQ decoder takes any grid (a 384 px model with the 256 px VQ)
    if fit["vocab_size"] != model.config.vocab_size:
        raise ValueError(f"tokenizer has {fit['vocab_size']} codes but the generator models "
                         f"{model.config.vocab_size}: they were not trained together")
    bad = {k: (v, getattr(model.config, k)) for k, v in fit.items() if tuple(_seq(v)) != tuple(_seq(getattr(model.config, k)))}
    if bad:
        hint = (f" (the tokenizer's image_size is {tokenizer.config.image_size}; if it should decode another "
                "size, set image_size in its config.json)" if "num_tokens" in bad else "")
        raise ValueError("the tokenizer does not fit the generator (tokenizer, generator): "
                         + ", ".join(f"{k} {a} != {b}" for k, (a, b) in bad.items()) + hint)


def set_precision(model, tokenizer, precision: str, device) -> torch.dtype:
    """Put a pipeline in its sampling precision, in place: the generator in `precision` (auto: bf16 on CUDA,
    fp32 elsewhere); a multi-scale tokenizer's quantizer with it (next-scale sampling runs it between
    scales), its decoder staying float32. Returns the dtype."""
    if precision == "auto":
        precision = "bf16" if torch.device(device).type == "cuda" else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    model.to(dtype)
    if kind_of(tokenizer).multiscale:
        tokenizer.quantize.to(dtype)
    return dtype


def precision_name(model) -> str:
    return "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "fp32"


def _seq(v):
    return v if isinstance(v, (tuple, list)) else (v,)


_FAST_SAMPLERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> {key: sampler}


def fast_sampler(model, tokenizer, batch: int, sampling: SamplingConfig, *, rows: bool = False,
                 compile: bool = False, graph: bool = True):
    """The family's fast sampler for this batch size, setting and kind of rng (rows: per-row streams),
    block steps compiled too with `compile` where Triton is importable; built on first use, then kept."""
    from ..layers.kernels import triton_available
    family = family_of(model)
    compile_blocks = compile and triton_available()      # torch.compile's GPU code is Triton
    key = (batch, id(tokenizer), sampling, rows, compile_blocks, graph)
    samplers = _FAST_SAMPLERS.setdefault(model, {})
    if key not in samplers:
        samplers[key] = family.sampler.fast(model, tokenizer, batch, sampling, family.fast, rows=rows,
                                            compile=compile_blocks, graph=graph)
    return samplers[key]


class Sampler:
    """A model, its tokenizer and one sampling setting, sampled through the family's sampler.

    fast: the family's fast path (None: on CUDA); its random stream under a torch.Generator differs
    from the reference loop's (noise drawn per step in a graph), its distribution does not; under
    RowStreams both draw the same numbers. compile: compile its block steps too.
    """

    def __init__(self, model, tokenizer, sampling: SamplingConfig, *, fast: bool | None = None,
                 compile: bool = False, graph: bool = True):
        self.family = family_of(model)
        self.family.check_sampling(sampling)
        check_pair(model, tokenizer)
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.fast = next(model.parameters()).is_cuda if fast is None else fast
        self.compile, self.graph = compile, graph

    @torch.no_grad()
    def result(self, labels: torch.Tensor, rng=None, progress: bool = False):
        """The family sampler's own result (tokens, or next-scale's indices and features)."""
        if self.fast:
            sampler = fast_sampler(self.model, self.tokenizer, labels.shape[0], self.sampling,
                                   rows=isinstance(rng, RowStreams), compile=self.compile, graph=self.graph)
            return sampler.generate(labels, rng)
        with kernels.reference_only():   # the readable loop on the readable layers, on a GPU too
            return self.family.sampler.reference(self.model, self.tokenizer, labels, self.sampling, rng, progress)

    def tokens(self, labels: torch.Tensor, rng=None) -> torch.Tensor:
        """(B, N) token ids (every scale in order for next-scale models)."""
        return self.family.sampler.tokens(self.result(labels, rng))

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, rng=None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, H, W) in [-1, 1], tokens (B, N))."""
        return self.family.sampler.images(self.model, self.tokenizer, self.result(labels, rng, progress))


def sample_images(model, tokenizer, labels: torch.Tensor, sampling: SamplingConfig, rng=None, *,
                  fast: bool | None = None, compile: bool = False, progress: bool = False):
    """(images (B, 3, H, W) in [-1, 1], tokens (B, N)) for labels (B,): `Sampler(...).sample` in one call."""
    return Sampler(model, tokenizer, sampling, fast=fast, compile=compile).sample(labels, rng, progress)
