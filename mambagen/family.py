"""The family record: everything shared code needs to know about a model family, in one place.

Each model file declares one `Family` beside its model (`models/aim.py`: `FAMILY = Family(...)`) and
`models/registry.py` collects them. cli, bench, sampling, editing, evaluation, training and conversion
look the family up (`registry.family_of(model)`, `registry.get_family(name)`) instead of probing a
model's attributes or its class name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Size:
    """A named size: the config values that define it (on top of the config class's defaults)."""
    config: dict
    description: str = ""
    official_params: int | None = None      # parameter count of the official implementation


@dataclass(frozen=True)
class Family:
    name: str                                # "aim": config.json's "family", `mambagen convert`'s choice
    description: str
    config: type                             # the config dataclass
    model: type                              # the nn.Module built from it
    sizes: dict[str, Size]                   # named sizes: create_model("aim-l")
    tokenizer: str                           # tokenizer kind it models ("vq" | "msvq", `tokenizers.KINDS`)
    fit: Callable[[Any], dict]               # tokenizer -> the config values that make a model fit it
    sampler: Any                             # the paradigm (`sample.raster.RASTER` ...): reference loop, fast
                                             # sampler, image decoding, edits
    fast: Any = None                         # its fast path on CUDA, the class its paradigm builds: a decode
                                             # (raster: start/step, e.g. AiMFastDecode) or a fast call
                                             # (block_steps + setting(), e.g. ARPGFastCall); None: the eager steps
    edits: frozenset = frozenset()           # edits it supports: "inpaint", "outpaint", "canvas"
    sampling_options: frozenset = frozenset()  # family options of SamplingConfig it reads (steps, ...)
    train_inputs: Callable | None = None     # (model, tokens, labels, quantizer, rng) -> model(*args) inputs
    needs_quantizer: bool = False            # training input built by the tokenizer's quantizer
    convert: Callable | None = None          # official weights (+ config, options) -> (model, tokenizer or None)
    convert_help: str = ""                   # what `mambagen convert NAME` takes
    convert_options: tuple = ()              # which of --vae / --vq the converter takes
    parity: tuple = ()                       # golden-fixture kinds its parity runner answers (tests/parity/NAME.py)
    official_sampling: dict = field(default_factory=dict)   # the official samplers' top-k/top-p/steps (bench)

    def check_sampling(self, sampling) -> None:
        """A family option set for a family that does not read it is a mistake, not a no-op."""
        foreign = [k for k in sampling.family_options_set() if k not in self.sampling_options]
        if foreign:
            takes = ", ".join(sorted(self.sampling_options)) or "none"
            raise ValueError(f"{', '.join(foreign)}: not an option of {self.name} sampling (it takes: {takes})")


def token_inputs(model, tokens, labels, quantizer=None, rng=None):
    """The training inputs of models that read tokens and labels only (AiM, GPT)."""
    return tokens, labels
