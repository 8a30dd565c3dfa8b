"""One sampling setting for every command: `SamplingConfig`, frozen and validated once.

The guidance scale means the same number everywhere: 1 = off, `uncond + (cond - uncond) * scale`.
Family options sit beside the common ones; a family's record says which it reads
(`Family.sampling_options`), and asking another family for them is an error, not a silent no-op.

    s = SamplingConfig.recommended(meta.get("sampling"), cfg_scale=3.0)   # checkpoint defaults + overrides
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

MASK_SCHEDULES = ("arccos", "cosine")       # ARPG: fraction still masked after each step
CFG_SCHEDULES = ("linear", "constant")      # ARPG: guidance ramp over the decided tokens

# family options and their "off" values: a family that does not read an option must leave it here
DEFAULT_GUIDANCE = 2.0   # what commands use when a checkpoint recommends no guidance scale

FAMILY_OPTIONS = {"steps": 64, "schedule": "arccos", "cfg_schedule": "linear", "cfg_interval": -1,
                  "more_smooth": False}


@dataclass(frozen=True)
class SamplingConfig:
    cfg_scale: float = 1.0          # guidance scale (1 = off); VAR/M-VAR reach it at the last scale
    temperature: float = 1.0        # 0 = greedy
    top_k: int = 0                  # 0 = off
    top_p: float = 1.0              # 1 = off
    seed: int = 0
    # family options
    steps: int = 64                 # ARPG: parallel decoding steps (capped at the number of tokens)
    schedule: str = "arccos"        # ARPG: tokens per step (MASK_SCHEDULES)
    cfg_schedule: str = "linear"    # ARPG: guidance per step (CFG_SCHEDULES)
    cfg_interval: int = -1          # LlamaGen: guide tokens 0 .. cfg_interval + 1 only (-1 = all)
    more_smooth: bool = False       # VAR/M-VAR: Gumbel-softmax mixtures of codes (the official visualisation)

    def __post_init__(self):
        if not self.cfg_scale >= 0:
            raise ValueError(f"cfg scale must be >= 0 (1 = no guidance), got {self.cfg_scale}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown sample schedule {self.schedule!r}; known: {', '.join(MASK_SCHEDULES)}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"unknown cfg schedule {self.cfg_schedule!r}; known: {', '.join(CFG_SCHEDULES)}")
        if self.cfg_interval < -1:
            raise ValueError(f"cfg interval must be >= -1 (-1 = guide every token), got {self.cfg_interval}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def replace(self, **changes) -> "SamplingConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def family_options_set(self) -> list[str]:
        """Family options that differ from their off values."""
        return [k for k, off in FAMILY_OPTIONS.items() if getattr(self, k) != off]

    @classmethod
    def recommended(cls, recommendation: dict | None = None, **overrides) -> "SamplingConfig":
        """A checkpoint's recommended setting (config.json "sampling"; "cfg" is the guidance scale;
        DEFAULT_GUIDANCE where it names none) with the caller's overrides on top; None overrides are
        left to the recommendation. Every command builds its setting here."""
        known = {f.name for f in fields(cls)}
        rec = dict(recommendation or {})
        if "cfg" in rec:
            rec.setdefault("cfg_scale", rec.pop("cfg"))
        rec.setdefault("cfg_scale", DEFAULT_GUIDANCE)
        unknown = sorted(set(rec) - known)
        if unknown:
            raise ValueError(f"the checkpoint's sampling recommendation has unknown fields {unknown}")
        values = {**rec, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)
