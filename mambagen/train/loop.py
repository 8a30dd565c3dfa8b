"""Stage 2: train a generator on pre-tokenized data, from one CPU to many GPUs (`torchrun`).

One readable function, `train(cfg)`. Data order, label dropout and dropout are
functions of (seed, step, rank), and the learning rate a function of the step, so
a checkpoint of {model, EMA, optimizer, step, RNG states, config} resumes exactly.
Any family plugs in: a model is called as `logits, loss = model(tokens, labels)`.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..checkpoint import load_model, load_tokenizer, save_model
from ..card import write_model_card
from ..data.tokens import TokenDataset
from ..io import check_finite, load_safetensors, write_json
from ..layers.embed import drop_labels
from ..layers.mamba2 import set_scan_chunk
from ..models.registry import create_model, family_of, family_of_size
from .memory import checkpoint_blocks
from .dist import (all_reduce_mean, any_rank, barrier, cleanup, full_state_dicts, init_distributed,
                   load_full_state_dicts, on_main, unwrap, wrap_model)
from .guard import StopSignals, TrainingInterrupted, check_resume, claim_run_folder, cleanup_failed_start
from .logging import RunLogger
from .optim import make_optimizer, scaled_lr
from .plumbing import (CheckpointFolders, autocast_for, clip_gradients, diverged, ema_init, ema_update, full_tensor,
                       load_ema, lr_at, read_train_state, replace_folder, rng_state, set_rng_state, weights_finite,
                       write_train_state)
from .plumbing import TrainingDiverged  # noqa: F401  (what `train` raises; imported from here by callers)


@dataclass
class TrainConfig:
    data: str                           # token dataset (mambagen tokenize)
    out: str                            # run directory
    model: str = "aim-small"            # registered name, or a checkpoint directory to start from
    model_overrides: dict = field(default_factory=dict)
    val_data: str | None = None         # token dataset for held-out bits/token
    tokenizer: str | None = None        # tokenizer directory: sample grids, and shipped with the final model
    steps: int = 1000                   # optimizer steps
    batch_size: int = 64                # global batch per optimizer step (all ranks, all micro-batches)
    grad_accum: int = 1
    lr: float = 1e-4                    # per 256 images; scaled linearly with batch_size
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    ema: float = 0.0                    # EMA decay, 0 = off
    class_dropout: float | None = None  # default: the model config's
    class_balance: float = 0.0          # draw images with weight count(class)^-this: 0 as stored, 1 every class alike
    precision: str = "auto"             # auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32
    strategy: str = "ddp"               # ddp or fsdp (for several processes)
    scan_chunk: int = 64                # Mamba2 scan chunk while training (memory; results do not depend on it)
    checkpointing: bool = False         # recompute each block in the backward pass (activation memory / compute)
    compile: bool = False               # torch.compile the model (GPU; AiM-L trains ~1.9x faster, see docs/speed.md)
    ckpt_every: int = 500
    keep_last: int = 3
    keep_best: bool = False             # also keep out/best: the weights at the lowest held-out bits/token
    log_every: int = 10
    eval_every: int = 500
    sample_cfg: float = 2.0
    seed: int = 0
    device: str | None = None
    resume: bool = False
    overwrite: bool = False             # replace a run already in `out` (its checkpoints, logs, final/)
    allow_changes: bool = False         # --resume although RESUME_FIXED settings changed
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        for name in ("steps", "batch_size", "grad_accum", "ckpt_every", "log_every", "eval_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not 0.0 <= self.class_balance <= 1.0:
            raise ValueError(f"class_balance must be in [0, 1] (0: every image alike, 1: every class alike), "
                             f"got {self.class_balance}")
        if self.keep_best and not self.val_data:
            raise ValueError("keep_best needs val_data: the best model is the one with the lowest held-out bits/token")


# a resumed run with other values of these would be another run (the model itself can never change)
RESUME_FIXED = ("batch_size", "grad_accum", "seed", "lr", "betas", "weight_decay", "warmup", "class_dropout",
                "class_balance")
RESUME_ALWAYS = ("model", "model_overrides")
RUN_MARKS = ("train_config.json", "checkpoints/step_*", "final", "log.csv")      # a folder holding a run
RUN_FILES = ("train_config.json", "checkpoints", "final", "best", ".final.*", ".best.*", "log.csv", "tb",
             "curves.png", "samples_*.png")                                      # what --overwrite deletes


# ----------------------------------------------------------------------------------------- helpers
def class_balance_weights(labels: torch.Tensor, power: float) -> torch.Tensor | None:
    """Per-image draw weights count(class)^-power, or None for plain shuffling (power 0). A long-tailed
    set (the emoji demo: 1,734 images of one class, 70 of another) otherwise trains its small classes
    25x less often; power 1 gives every class the same share, 0.5 is between."""
    if power == 0:
        return None
    counts = torch.bincount(labels).double()
    return counts[labels] ** -power


class BatchOrder:
    """(epoch, global batch indices) of each optimizer step: a fresh permutation per epoch, drop last; with
    `weights`, an epoch is n draws with replacement instead. A pure function of (step, n, batch, seed,
    weights), so resuming is exact; each epoch's order is drawn once and kept while its steps run."""

    def __init__(self, n: int, batch: int, seed: int, weights: torch.Tensor | None = None):
        self.per_epoch = n // batch
        if self.per_epoch == 0:
            raise ValueError(f"batch_size {batch} is larger than the dataset ({n} samples)")
        self.n, self.batch, self.seed, self.weights = n, batch, seed, weights
        self._epoch, self._order = None, None

    def __call__(self, step: int) -> tuple[int, torch.Tensor]:
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, (torch.randperm(self.n, generator=g) if self.weights is None else
                                               torch.multinomial(self.weights, self.n, True, generator=g))
        return epoch, self._order[offset * self.batch:(offset + 1) * self.batch]


def _batch_indices(step: int, n: int, batch: int, seed: int,
                   weights: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
    """One step of `BatchOrder` on its own."""
    return BatchOrder(n, batch, seed, weights)(step)


def _step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    return ((seed * 1_000_003 + step) * 4099 + rank) * 131 + micro


def checkpoint_folders(out: Path) -> CheckpointFolders:
    """out/checkpoints/step_<8 digits>/."""
    return CheckpointFolders(out / "checkpoints", width=8)


def _make_model(cfg: TrainConfig, data: TokenDataset):
    if Path(cfg.model).is_dir():
        return load_model(cfg.model).train()
    names = {f.name for f in fields(family_of_size(cfg.model).config)}   # clear error for an unknown name
    tok = data.meta.get("tokenizer_config", {})
    shape = dict(vocab_size=data.vocab_size, num_classes=data.num_classes, num_tokens=data.num_tokens,
                 patch_nums=tuple(tok.get("patch_nums", ())), Cvae=tok.get("z_channels"))
    shape = {k: v for k, v in shape.items() if k in names and v not in (None, ())}
    return create_model(cfg.model, **{**shape, **cfg.model_overrides})


def _forward(model, tokens, labels, quantizer, rng=None):
    """logits, loss = model(...) on the inputs its family's record builds (next-scale models: the VAE's
    teacher-forcing maps; ARPG: a fresh order per sample drawn from `rng`)."""
    raw = unwrap(model)
    return model(*family_of(raw).train_inputs(raw, tokens, labels, quantizer, rng))


def training_quantizer(family, tokenizer):
    """The tokenizer's quantizer where the family's training inputs need it (VAR / M-VAR train on the
    VAE's teacher-forcing maps), else None."""
    if not family.needs_quantizer:
        return None
    from ..tokenizers import kind_of
    if tokenizer is None or kind_of(tokenizer).name != family.tokenizer:
        raise ValueError(f"{family.name} training needs --tokenizer: the {family.tokenizer} tokenizer the tokens came "
                         "from (its quantizer builds the teacher-forcing input)")
    return tokenizer.quantize.requires_grad_(False)


@torch.no_grad()
def evaluate_nats(model, data: TokenDataset, batch: int, info, autocast, quantizer=None,
                  subset: torch.Tensor | None = None) -> tuple[float, int]:
    """(summed cross-entropy in nats per token, sequences) of the held-out split or its `subset` of
    indices, over every rank (no label dropout)."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=info.device), 0
    # every rank runs the same number of batches (FSDP gathers weights in each forward):
    # the last len % world samples are left out
    subset = torch.arange(len(data)) if subset is None else subset
    idx = subset[torch.arange(info.rank, len(subset) - len(subset) % info.world, info.world)]
    for chunk in idx.split(batch):
        tokens, labels = data.batch(chunk)
        with autocast:   # ARPG: a fixed seed per batch, so held-out numbers are comparable across evals
            _, loss = _forward(model, tokens.to(info.device), labels.to(info.device), quantizer,
                               torch.Generator().manual_seed(int(chunk[0])))
        total += loss.double() * len(chunk)
        count += len(chunk)
    stats = all_reduce_mean(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=info.device)]), info)
    model.train()
    return (stats[0] * info.world).item(), round((stats[1] * info.world).item())


def evaluate_bits_per_token(model, data: TokenDataset, batch: int, info, autocast, quantizer=None) -> float:
    """Mean cross-entropy of the held-out split, in bits per token (no label dropout)."""
    total, count = evaluate_nats(model, data, batch, info, autocast, quantizer)
    return total / count / math.log(2)


@torch.no_grad()
def sample_grid(model, tokenizer, num_classes: int, path: Path, cfg_scale: float, seed: int) -> None:
    """A grid of 4 samples per class (16 classes at most) through the family's sampler (its fast path on
    CUDA: the graphs are built at the first grid and kept; the weights they read are updated in place)."""
    from ..images import make_grid, save_image, to_uint8
    from ..sample.config import SamplingConfig
    from ..sample.pipeline import sample_images
    was_training = model.training
    model.eval()
    per = 4
    labels = torch.arange(num_classes, device=next(model.parameters()).device).repeat_interleave(per)[: 16 * per]
    rng = torch.Generator(device=labels.device).manual_seed(seed)
    images, _ = sample_images(model, tokenizer, labels, SamplingConfig(cfg_scale=cfg_scale, seed=seed), rng)
    save_image(make_grid(to_uint8(images), nrow=per, scale=2), path)
    model.train(was_training)


# ----------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> Path:
    """Train; returns the final model directory (out/final, a pipeline when a tokenizer is given).

    SIGINT/SIGTERM stop it after the current step with a checkpoint (`TrainingInterrupted`); a NaN/inf
    raises `TrainingDiverged` naming the checkpoint to resume from."""
    info = init_distributed(cfg.device)
    try:
        with cleanup_failed_start(Path(cfg.out), enabled=info.main):
            return _train(cfg, info)
    finally:
        cleanup(info)


def _train(cfg: TrainConfig, info) -> Path:
    out = Path(cfg.out)
    data = TokenDataset(cfg.data)
    val = TokenDataset(cfg.val_data) if cfg.val_data else None
    micro = cfg.batch_size // (info.world * cfg.grad_accum)
    if micro * info.world * cfg.grad_accum != cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {info.world} x "
                         f"grad_accum {cfg.grad_accum}")
    autocast = autocast_for(info.device, cfg.precision)
    batch_order = BatchOrder(len(data), cfg.batch_size, cfg.seed, class_balance_weights(data.labels, cfg.class_balance))

    # 1. model, optimizer, EMA (identical init on every rank); all checked before the folder is touched
    torch.manual_seed(cfg.seed)
    raw = _make_model(cfg, data).to(info.device)
    set_scan_chunk(raw, cfg.scan_chunk)
    if cfg.checkpointing:
        checkpoint_blocks(raw)
    if cfg.compile:
        raw.compile()   # in place: parameter names (and so checkpoints) stay as they are
    mcfg = raw.config
    if (mcfg.vocab_size, mcfg.num_tokens) != (data.vocab_size, data.num_tokens) or mcfg.num_classes < data.num_classes:
        raise ValueError(f"model (vocab {mcfg.vocab_size}, {mcfg.num_tokens} tokens, {mcfg.num_classes} classes) "
                         f"does not fit the data (vocab {data.vocab_size}, {data.num_tokens} tokens, "
                         f"{data.num_classes} classes)")
    p_drop = mcfg.class_dropout if cfg.class_dropout is None else cfg.class_dropout
    params = {n for n, _ in raw.named_parameters(remove_duplicate=False)}
    model = wrap_model(raw, info, cfg.strategy)
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size)
    opt = make_optimizer(model, peak_lr, cfg.betas, cfg.weight_decay)
    ema = ema_init(unwrap(model), torch.float32) if cfg.ema else None
    tokenizer = load_tokenizer(cfg.tokenizer, info.device) if cfg.tokenizer else None
    if tokenizer is not None:     # the tokenizer that made the tokens (grids and sample images depend on it)
        from ..sample.pipeline import check_pair
        from ..tokenizers import check_same_tokenizer
        check_pair(raw, tokenizer)
        if "tokenizer_config" in data.meta:
            check_same_tokenizer(data.meta["tokenizer_config"], tokenizer, f"--tokenizer {cfg.tokenizer}",
                                 f"that made {cfg.data}")
    quantizer = training_quantizer(family_of(raw), tokenizer)

    # the tokenizer the ids came from (`sample --tokenizer` checks a bare model's against it) and class names
    made_by = {"tokenizer_config": data.meta["tokenizer_config"]} if "tokenizer_config" in data.meta else {}
    if data.classes:     # `sample --classes NAME`
        made_by["classes"] = list(data.classes)

    # 2. the run folder: this run's alone while it trains (locked); resume
    lock = on_main(lambda: claim_run_folder(out, resume=cfg.resume, overwrite=cfg.overwrite, marks=RUN_MARKS,
                                            written=RUN_FILES), info)
    try:
        folders = checkpoint_folders(out)
        if info.main:
            folders.recover()                   # what a kill mid-save left
        barrier(info)
        step, best_bits = 0, math.inf
        last = folders.latest()
        if cfg.resume and last is not None:
            state = read_train_state(last)
            changed = check_resume(state.get("config", {}), asdict(cfg), RESUME_FIXED, RESUME_ALWAYS,
                                   cfg.allow_changes)
            weights = load_safetensors(last / "model.safetensors")
            check_finite(weights, str(last / "model.safetensors"), params)
            load_full_state_dicts(model, opt, weights, state["optimizer"])
            if ema is not None and (last / "ema.safetensors").exists():
                ema = load_ema(last / "ema.safetensors", info.device)
            step, best_bits = state["step"], state.get("best_bits", math.inf)
            set_rng_state(state["rng"])
            if info.main:
                print(f"resumed from {last} at step {step}"
                      + "".join(f"; {k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        elif cfg.resume and info.main:
            print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from scratch")
        logger = RunLogger(out, enabled=info.main)
        logger.truncate_after(step)
        if info.main:
            write_json(out / "train_config.json", {**asdict(cfg), "world_size": info.world})

        def save_checkpoint(at: int) -> Path:
            model_state, optim_state = full_state_dicts(model, opt)
            # an update exploded them: keep the good ones (FSDP: only rank 0 holds the full state)
            if any_rank(not weights_finite(model_state, params), info):
                raise diverged("the weights", math.nan, at, folders.last_good(at, parameters=params),
                               "the last update made some NaN/inf")
            if info.main:
                def fill(folder: Path) -> None:
                    save_model(unwrap(model), folder, ema=ema, extra={"step": at, **made_by},
                               state={k: full_tensor(v) for k, v in model_state.items()})
                    write_train_state(folder, {"step": at, "optimizer": optim_state, "config": asdict(cfg),
                                               "world_size": info.world, "best_bits": best_bits, "rng": rng_state()})
                folders.write(at, fill)
                folders.rotate(cfg.keep_last)
            barrier(info)
            return folders.path(at)

        def save_best(at: int, bits: float) -> None:
            """out/best, replaced whole: written beside it, then renamed over it."""
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
            state = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if info.main:
                replace_folder(out / "best", lambda new: write_model_card(save_model(
                    unwrap(model), new, tokenizer=tokenizer, ema=ema, state={k: full_tensor(v) for k, v in state.items()},
                    extra={"step": at, "val_bits_per_token": bits, "run": str(out), **made_by})))
            barrier(info)

        def stop_here(signum: int) -> TrainingInterrupted:
            bar.close()
            done = folders.latest()
            saved = done if done is not None and done.name == folders.path(step).name else save_checkpoint(step)
            return TrainingInterrupted(signum, step, saved)

        # 3. the loop; SIGINT/SIGTERM end it after the step in hand, with a checkpoint
        model.train()
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not (info.main and cfg.progress))
        t_last, tokens_seen = time.time(), 0
        with StopSignals() as stop:
            while step < cfg.steps:
                if any_rank(stop.requested, info):      # every rank stops after the same step
                    raise stop_here(stop.requested or 15)
                epoch, idx = batch_order(step)
                mine = idx[info.rank * micro * cfg.grad_accum:(info.rank + 1) * micro * cfg.grad_accum]
                torch.manual_seed(_step_seed(cfg.seed, step, info.rank))       # dropout: a function of (step, rank)
                loss_sum = torch.zeros((), device=info.device)
                for m, chunk in enumerate(mine.split(micro)):
                    tokens, labels = data.batch(chunk, epoch, cfg.seed)
                    g = torch.Generator().manual_seed(_step_seed(cfg.seed, step, info.rank, m + 1))
                    labels = drop_labels(labels, p_drop, mcfg.num_classes, generator=g)
                    sync = m == cfg.grad_accum - 1 or not hasattr(model, "no_sync")
                    with (nullcontext() if sync else model.no_sync()), autocast:
                        _, loss = _forward(model, tokens.to(info.device), labels.to(info.device), quantizer, g)
                    (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach() / cfg.grad_accum
                loss_avg = all_reduce_mean(loss_sum, info)
                grad_norm = clip_gradients(model.parameters(), cfg.grad_clip)
                if not torch.isfinite(loss_avg + grad_norm):   # one sync; the weights of `step` are bad, older may be fine
                    what, value = ("the loss", loss_avg) if not torch.isfinite(loss_avg) else ("the gradient norm", grad_norm)
                    bar.close()
                    raise diverged(what, value.item(), step + 1, folders.last_good(step + 1, parameters=params))
                lr = lr_at(step, peak_lr, cfg.warmup, cfg.steps, "cosine", cfg.min_lr_ratio)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.step()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema_update(ema, unwrap(model), cfg.ema)
                step += 1
                tokens_seen += cfg.batch_size * data.num_tokens
                bar.update(1)

                if step % cfg.log_every == 0 or step == cfg.steps:
                    dt = time.time() - t_last
                    loss_v = loss_avg.item()
                    logger.log(step, "train", loss=loss_v, bits_per_token=loss_v / math.log(2), lr=lr,
                               grad_norm=float(grad_norm), tokens_per_s=tokens_seen / max(dt, 1e-9))
                    bar.set_postfix(loss=f"{loss_v:.3f}", lr=f"{lr:.2e}")
                    t_last, tokens_seen = time.time(), 0
                if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                    bpt = evaluate_bits_per_token(model, val, micro, info, autocast, quantizer)
                    logger.log(step, "val", bits_per_token=bpt)
                    if info.main:
                        bar.write(f"step {step}: val {bpt:.4f} bits/token")
                    if cfg.keep_best and bpt < best_bits:
                        best_bits = bpt
                        save_best(step, bpt)
                if tokenizer is not None and info.main and cfg.strategy != "fsdp" and (
                        step % cfg.eval_every == 0 or step == cfg.steps):
                    sample_grid(unwrap(model), tokenizer, mcfg.num_classes, out / f"samples_{step:08d}.png",
                                cfg.sample_cfg, cfg.seed)
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    save_checkpoint(step)
        bar.close()

        # 4. the final model: weights (+ EMA) (+ tokenizer) as one loadable directory, replaced whole
        final = out / "final"
        if info.main:
            last = folders.latest()
            replace_folder(final, lambda new: write_model_card(save_model(
                unwrap(model), new, tokenizer=tokenizer, ema=ema, state=load_safetensors(last / "model.safetensors"),
                extra={"step": step, "run": str(out), **made_by,
                       **({"val_bits_per_token": best_bits} if math.isfinite(best_bits) else {})})))
            logger.plot()
            logger.close()
        barrier(info)
        return final
    finally:
        if lock is not None:
            lock.release()
