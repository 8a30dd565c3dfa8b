"""Stage-1 training: the VQ image tokenizer, and the `mambagen train-tokenizer` command.

    mambagen train-tokenizer --data ROOT/train --val-data ROOT/val --out runs/vq \\
        --tokenizer vq-f8-small --image-size 64 --batch-size 64 --steps 20000

Loss (LlamaGen recipe): l2 * MSE + l1 * L1 reconstruction + the model's codebook / commitment (/ entropy)
terms, + perceptual_weight * LPIPS when `--perceptual-weights FILE` is given, + gan_weight * hinge
generator loss from `disc_start` on (PatchGAN discriminator trained alongside, see `gan.py`).

Run directory `out/`:
  log.csv, tb/, curves.png, train.log    scalars (RunLogger), training curves, text log
  recon_<step>.png                       evaluation images: originals (top row) over reconstructions
  checkpoints/step_<N>/                  tokenizer/ (a loadable tokenizer dir), train_state.pt (optimizers,
                                         step, RNG states), discriminator.safetensors, ema.safetensors,
                                         train_config.json; written to a temp dir and renamed (atomic);
                                         the last `keep_last` are kept
  tokenizer/ (tokenizer_ema/)            the final tokenizer, loadable with `mambagen.load_tokenizer`

`--resume` continues from the latest checkpoint and reproduces the uninterrupted run exactly (data
order, flips, RNG and optimizer states are all restored; with num_workers > 0 this holds as long as the
dataset's randomness comes from `set_epoch`, as ImageFolder's does).

Single process only: the tokenizer is small and trains fast on one GPU; generator training is the
multi-GPU part. On CUDA the forward passes run under bfloat16 autocast; on CPU in float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import save_tokenizer
from ..device import resolve_device
from ..images import make_grid, save_image, to_uint8
from ..io import (dataclass_from_dict, load_safetensors, load_state_dict_strict,
                  read_json, save_safetensors, write_json)
from ..metrics import SSIM_WINDOW, codebook_usage, psnr, ssim
from ..tokenizers import create_tokenizer
from ..tokenizers.msvq import MSVQ_CONFIGS, MSVQModel
from ..tokenizers.vq import VQ_CONFIGS, VQModel
from .gan import (NLayerDiscriminator, adaptive_weight, gan_active, hinge_d_loss, hinge_g_loss, load_perceptual)
from .guard import (StopSignals, TrainingInterrupted, check_resume, claim_run_folder, cleanup_failed_start,
                    ignore_stop_signals)
from .logging import RunLogger
from .plumbing import (CheckpointFolders, TrainingDiverged, autocast_for, clip_gradients, diverged, ema_init,
                       ema_update, load_ema, lr_at, read_train_state, replace_folder, rng_state, seed_everything, set_rng_state,
                       weights_finite, write_train_state)

log = logging.getLogger(__name__)

# registered tokenizer configs this trainer builds: LlamaGen-style VQ (vq-*) and VAR multi-scale (msvq-*)
TOKENIZER_NAMES = sorted(VQ_CONFIGS) + sorted(MSVQ_CONFIGS)


def build_tokenizer(name: str, **overrides) -> nn.Module:
    """A randomly initialised tokenizer from a registered name (see TOKENIZER_NAMES)."""
    return create_tokenizer(name, **overrides)


# fields that must not change when resuming: they change the model or the data order
RESUME_ALWAYS = ("tokenizer", "image_size")                     # another model: never
RESUME_FIXED = ("batch_size", "seed", "lr", "betas")            # another run: only with --allow-changes
RUN_MARKS = ("checkpoints/step_*", "tokenizer/config.json", "log.csv")
RUN_FILES = ("checkpoints", "tokenizer", "tokenizer_ema", ".tokenizer.*", ".tokenizer_ema.*", "log.csv", "tb",
             "curves.png", "recon_*.png", "train.log")


TrainingDivergedError = TrainingDiverged   # the name this module used


# ============================================================================ configuration
@dataclass
class TokenizerTrainConfig:
    data: str  # training images: root/<class>/<image>
    out: str  # run directory
    val_data: Optional[str] = None  # validation images (same layout); without it, a training subset is evaluated
    tokenizer: str = "vq-f8-small"  # registered tokenizer config (VQ_CONFIGS or msvq.MSVQ_CONFIGS)
    image_size: int = 64
    random_flip: bool = True  # horizontal flips of training images
    # optimisation (AdamW; betas (0.5, 0.9) as LlamaGen's VQ training)
    batch_size: int = 64
    steps: int = 20000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    warmup: int = 0  # linear warm-up steps
    lr_schedule: str = "constant"  # after warm-up: constant, or cosine decay to 0 at `steps`
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    # loss weights; codebook/commitment/entropy weights come from the tokenizer config
    l2_weight: float = 1.0
    l1_weight: float = 0.0
    perceptual_weights: Optional[str] = None  # LPIPS-VGG16 state dict file or a judge directory; None = off
    perceptual_weight: float = 1.0
    gan_weight: float = 0.0  # 0 = no GAN; 0.5 is typical
    disc_start: int = 10000  # step at which the GAN terms (and discriminator training) start
    disc_layers: int = 3
    disc_channels: int = 64
    disc_norm: str = "group"  # group (batch-size independent) or batch (as taming)
    adaptive_gan_weight: bool = False  # scale the GAN term by taming's gradient-norm ratio
    ema: float = 0.0  # EMA decay of the tokenizer weights (0 = off), e.g. 0.999
    # bookkeeping
    log_every: int = 50
    eval_every: int = 1000
    eval_images: int = 1024  # images evaluated (evenly spaced over the split; 0 = all)
    grid_images: int = 8  # images in each reconstruction grid
    ckpt_every: int = 1000
    keep_last: int = 3  # checkpoints kept
    seed: int = 0
    num_workers: int = 4
    device: Optional[str] = None  # default: cuda if available
    resume: bool = False
    overwrite: bool = False  # replace a run already in `out`
    allow_changes: bool = False  # --resume although RESUME_FIXED settings changed
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.tokenizer not in TOKENIZER_NAMES:
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}; available: {TOKENIZER_NAMES}")
        for name in ("image_size", "batch_size", "steps", "log_every", "eval_every", "ckpt_every", "keep_last",
                     "grid_images", "disc_layers", "disc_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "disc_start", "eval_images", "num_workers", "weight_decay", "grad_clip",
                     "l1_weight", "l2_weight", "perceptual_weight", "gan_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.disc_norm not in ("group", "batch"):
            raise ValueError(f"disc_norm must be 'group' or 'batch', got {self.disc_norm!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema decay must be in [0, 1), got {self.ema}")
        if self.l1_weight == 0 and self.l2_weight == 0:
            raise ValueError("l1_weight and l2_weight are both 0: there would be no reconstruction loss")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerTrainConfig":
        return dataclass_from_dict(cls, d)


# ============================================================================ small pieces
def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, l1_weight: float, l2_weight: float) -> torch.Tensor:
    """l2 * MSE + l1 * L1 over all pixels (scalar, float32)."""
    recon, target = recon.float(), target.float()
    loss = recon.new_zeros(())
    if l2_weight:
        loss = loss + l2_weight * F.mse_loss(recon, target)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(recon, target)
    return loss


# ============================================================================ data
def build_datasets(cfg: TokenizerTrainConfig):
    """(train, val or None) ImageFolder datasets of the configured roots, every file decoded once first:
    an unreadable image is left out and reported (as `mambagen tokenize` does), never silently replaced
    by its neighbour."""
    from ..data.folder import ImageFolder, describe_skipped

    train = ImageFolder(cfg.data, cfg.image_size, random_flip=cfg.random_flip)
    val = ImageFolder(cfg.val_data, cfg.image_size, random_flip=False) if cfg.val_data else None
    for ds in (train, val):
        if ds is not None:
            report = ds.scan(progress=cfg.progress)
            if report["skipped"] or report.get("links_skipped"):
                log.warning(describe_skipped(report))
    return train, val


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch (drop_last): a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


class EpochIndexed(torch.utils.data.Dataset):
    """Items addressed as (epoch, index): selects the epoch (flips) right before reading, which also
    works inside DataLoader workers, whose dataset copies a `set_epoch` in the main process misses."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch, self.seed)
        return self.dataset[index]


class StepBatches:
    """Endless batch sampler: the batch of step s is batch s % E of epoch s // E (E batches per epoch),
    as [(epoch, index)] lists. Starting at `start_step`, a resumed run reads exactly what the
    uninterrupted one would, without loading the skipped images."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int):
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.per_epoch = n // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the training set has {n} images, fewer than --batch-size {batch_size}")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(self.start_step, self.per_epoch)
        while True:
            for batch in epoch_batches(self.n, self.batch_size, self.seed, epoch)[offset:]:
                yield [(epoch, i) for i in batch]
            epoch, offset = epoch + 1, 0


def train_batches(dataset, cfg: TokenizerTrainConfig, start_step: int, pin: bool) -> Iterator[torch.Tensor]:
    """Endless stream of training image batches (B, 3, S, S) from `start_step` on; one DataLoader
    for the whole run, so worker processes are not restarted every epoch."""
    sampler = StepBatches(len(dataset), cfg.batch_size, cfg.seed, start_step)
    # own generator: the loader's worker base seed must not draw from (and shift) the global RNG
    loader = torch.utils.data.DataLoader(EpochIndexed(dataset, cfg.seed), batch_sampler=sampler,
                                         num_workers=cfg.num_workers, pin_memory=pin,
                                         generator=torch.Generator().manual_seed(cfg.seed),
                                         worker_init_fn=ignore_stop_signals)
    for images, _ in loader:
        yield images


def eval_loader(dataset, cfg: TokenizerTrainConfig) -> torch.utils.data.DataLoader:
    """A fixed subset (evenly spaced, so every class appears) in a fixed order."""
    n = len(dataset)
    k = n if cfg.eval_images == 0 else min(n, cfg.eval_images)
    indices = torch.linspace(0, n - 1, k).round().long().unique().tolist()
    subset = torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=cfg.batch_size, shuffle=False,
                                       num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(0),
                                       worker_init_fn=ignore_stop_signals)


# ============================================================================ checkpoints
def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    return CheckpointFolders(Path(run_dir) / "checkpoints").latest()


# ============================================================================ the trainer
class TokenizerTrainer:
    """Holds the model, discriminator, optimizers and step; `train_tokenizer` drives it."""

    def __init__(self, cfg: TokenizerTrainConfig, train_set, val_set=None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.checkpoints = CheckpointFolders(self.out / "checkpoints")
        self.device = resolve_device(cfg.device)
        self.train_set, self.val_set = train_set, val_set
        self.step = 0
        self.last_checkpoint: Optional[Path] = None

        seed_everything(cfg.seed)
        self.model: VQModel | MSVQModel = build_tokenizer(cfg.tokenizer, image_size=cfg.image_size).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.lpips = self._build_perceptual()   # first: a bad --perceptual-weights fails before any log line
        self.disc, self.disc_optimizer = self._build_discriminator()
        self.ema = ema_init(self.model) if cfg.ema > 0 else None
        self.track_usage = self.model.config.codebook_show_usage

    def _build_discriminator(self):
        cfg = self.cfg
        if cfg.gan_weight == 0:
            log.info("GAN loss off (--gan-weight 0)")
            return None, None
        need = NLayerDiscriminator.min_image_size(cfg.disc_layers)
        if cfg.image_size < need:
            fits = [n for n in range(1, cfg.disc_layers) if NLayerDiscriminator.min_image_size(n) <= cfg.image_size]
            hint = f"use --disc-layers {fits[-1]}" if fits else "turn the GAN off (--gan-weight 0)"
            raise ValueError(f"--image-size {cfg.image_size} is too small for a {cfg.disc_layers}-layer "
                             f"discriminator (needs >= {need}): {hint}")
        disc = NLayerDiscriminator(3, cfg.disc_channels, cfg.disc_layers, cfg.disc_norm).to(self.device)
        opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        log.info(f"GAN loss on from step {cfg.disc_start}: weight {cfg.gan_weight}, PatchGAN {cfg.disc_layers} layers, "
                 f"{cfg.disc_norm} norm, {sum(p.numel() for p in disc.parameters()):,} params")
        return disc, opt

    def _build_perceptual(self):
        cfg = self.cfg
        if cfg.perceptual_weights is None:
            log.info("perceptual (LPIPS) loss off: no --perceptual-weights file given")
            return None
        if cfg.perceptual_weight == 0:
            log.info("perceptual (LPIPS) loss off: --perceptual-weight 0")
            return None
        lpips = load_perceptual(cfg.perceptual_weights, self.device)
        what = "LPIPS-VGG16" if lpips.metric == "lpips" else "the judge's features"
        log.info(f"perceptual loss on: {what} from {cfg.perceptual_weights}, weight {cfg.perceptual_weight}")
        return lpips

    # ---- one optimisation step ----------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        for opt in (self.optimizer, self.disc_optimizer):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr

    def last_good(self, before: int) -> Optional[Path]:
        """The newest checkpoint older than step `before` with finite weights."""
        return self.checkpoints.last_good(before, "tokenizer/model.safetensors",
                                          {n for n, _ in self.model.named_parameters()})

    def _check_finite(self, value: torch.Tensor, what: str, terms: dict) -> None:
        if not torch.isfinite(value).all():   # the weights of this step are bad, earlier ones may be fine
            parts = ", ".join(f"{k} {float(v.detach() if torch.is_tensor(v) else v):.4g}" for k, v in terms.items())
            raise diverged(what, value.detach(), self.step + 1, self.last_good(self.step + 1), parts)

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        """One generator (+ discriminator) update on images (B, 3, S, S); returns scalar floats."""
        cfg, model = self.cfg, self.model
        lr = lr_at(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.lr_schedule)
        self._set_lr(lr)
        model.train()
        images = images.to(self.device, non_blocking=True)
        amp = autocast_for(self.device)

        with amp:
            recon, vq = model(images, track_usage=self.track_usage)  # (B, 3, S, S)
        recon = recon.float()
        rec = reconstruction_loss(recon, images, cfg.l1_weight, cfg.l2_weight)
        terms = {"recon": rec, "codebook": vq.codebook, "commit": vq.commitment}
        if vq.entropy is not None:
            terms["entropy"] = vq.entropy
        loss = rec + vq.total.float()
        nll = rec  # the terms the adaptive GAN weight balances against
        if self.lpips is not None:
            with amp:
                p = self.lpips(recon, images).float().mean()
            terms["perceptual"] = p
            loss = loss + cfg.perceptual_weight * p
            nll = nll + cfg.perceptual_weight * p

        gan_on = self.disc is not None and gan_active(self.step, cfg.disc_start)
        if gan_on:
            self.disc.requires_grad_(False)  # the generator step must not touch the discriminator
            with amp:
                g = hinge_g_loss(self.disc(recon).float())
            w = cfg.gan_weight
            if cfg.adaptive_gan_weight:
                w = w * adaptive_weight(nll, g, model.decoder.conv_out.weight)
                terms["gan_w"] = w
            terms["g_loss"] = g
            loss = loss + w * g
        terms = {"loss": loss, **terms}

        self._check_finite(loss, "the loss", terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = self._clip(model)
        self._check_finite(gnorm, "the gradient norm", terms)
        self.optimizer.step()

        if gan_on:
            terms["d_loss"] = self._discriminator_step(images, recon.detach())
        if self.ema is not None:
            ema_update(self.ema, model, cfg.ema)
        out = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
        out.update(grad_norm=float(gnorm), lr=lr)
        if vq.usage is not None:
            out["usage"] = vq.usage
        return out

    def _clip(self, module: nn.Module) -> torch.Tensor:
        return clip_gradients(module.parameters(), self.cfg.grad_clip)

    def _discriminator_step(self, images: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.disc.requires_grad_(True)
        with autocast_for(self.device):
            logits_real, logits_fake = self.disc(images), self.disc(fake)
        d = hinge_d_loss(logits_real.float(), logits_fake.float())
        self._check_finite(d, "the discriminator loss", {"d_loss": d})
        self.disc_optimizer.zero_grad(set_to_none=True)
        d.backward()
        self._clip(self.disc)
        self.disc_optimizer.step()
        return d.detach()

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> tuple[str, dict[str, float], Optional[Path]]:
        """(split name, metrics, reconstruction grid path) over the validation subset."""
        cfg, model = self.cfg, self.model
        dataset, split = (self.val_set, "val") if self.val_set is not None else (self.train_set, "train_eval")
        model.eval()
        sums, count, ids_all, originals, recons = {}, 0, [], [], []
        for images, _ in eval_loader(dataset, cfg):
            images = images.to(self.device)
            with autocast_for(self.device):
                latent = model.encode_latent(images)
                # (B, C, h, w), (B, h*w) (multi-scale: all scales' ids, (B, L))
                quant, ids = (model.quantize_latent(latent) if isinstance(model, MSVQModel)
                              else model.quantize(latent))
                recon = model.decode_latent(quant)
            recon = recon.float()
            clamped = recon.clamp(-1, 1)  # metrics on displayable images
            B = images.shape[0]
            batch = {"recon": reconstruction_loss(recon, images, cfg.l1_weight, cfg.l2_weight) * B,
                     "psnr": psnr(clamped, images).sum()}
            if min(images.shape[-2:]) >= SSIM_WINDOW:
                batch["ssim"] = ssim(clamped, images).sum()
            if self.lpips is not None:
                batch[self.lpips.metric] = self.lpips(clamped, images).float().sum()
            for k, v in batch.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += B
            ids_all.append(ids.cpu())
            need = cfg.grid_images - sum(len(o) for o in originals)
            if need > 0:
                originals.append(to_uint8(images[:need]))
                recons.append(to_uint8(clamped[:need]))
        metrics = {k: v / count for k, v in sums.items()}
        metrics["usage"] = codebook_usage(torch.cat(ids_all), model.codebook_size)
        originals, recons = np.concatenate(originals), np.concatenate(recons)  # (n, S, S, 3) each
        grid = make_grid(np.concatenate([originals, recons]), nrow=len(originals), scale=2)  # originals on top
        path = save_image(grid, self.out / f"recon_{self.step}.png")
        return split, metrics, path

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write checkpoints/step_<N>/ beside its name and rename it into place (`CheckpointFolders`)."""
        if not weights_finite(self.model.state_dict(), {n for n, _ in self.model.named_parameters()}):
            raise diverged("the weights", float("nan"), self.step, self.last_good(self.step),
                           "the last update made some NaN/inf")

        def fill(folder: Path) -> None:
            save_tokenizer(self.model, folder / "tokenizer",
                           extra={"step": self.step, "trainer": "mambagen train-tokenizer"})
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng": rng_state()}
            if self.disc is not None:
                save_safetensors(folder / "discriminator.safetensors", self.disc.state_dict())
                state["disc_optimizer"] = self.disc_optimizer.state_dict()
            if self.ema is not None:
                save_safetensors(folder / "ema.safetensors", self.ema)
            write_json(folder / "train_config.json", self.cfg.to_dict())
            write_train_state(folder, state)                  # last: marks the checkpoint complete

        self.last_checkpoint = self.checkpoints.write(self.step, fill)
        self.checkpoints.rotate(self.cfg.keep_last)
        return self.last_checkpoint

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything `save_checkpoint` wrote, so training continues exactly."""
        saved = read_json(path / "train_config.json")
        changed = check_resume(saved, self.cfg.to_dict(), RESUME_FIXED, RESUME_ALWAYS, self.cfg.allow_changes)
        if changed:
            log.info("resuming with changed settings: "
                     + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        load_state_dict_strict(self.model, load_safetensors(path / "tokenizer" / "model.safetensors"),
                               str(path / "tokenizer"))
        state = read_train_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.disc is not None:
            if (path / "discriminator.safetensors").is_file() and "disc_optimizer" in state:
                load_state_dict_strict(self.disc, load_safetensors(path / "discriminator.safetensors"),
                                       str(path / "discriminator.safetensors"))
                self.disc_optimizer.load_state_dict(state["disc_optimizer"])
            else:
                log.info(f"{path} has no discriminator: starting a fresh one")
        if self.ema is not None:
            if (path / "ema.safetensors").is_file():
                self.ema = load_ema(path / "ema.safetensors", self.device)
            else:
                log.info(f"{path} has no EMA weights: starting the EMA from the current weights")
                self.ema = ema_init(self.model)
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.last_checkpoint = path

    def export(self) -> Path:
        """The final tokenizer (and its EMA) as loadable tokenizer directories."""
        extra = {"step": self.step, "trainer": "mambagen train-tokenizer"}
        path = replace_folder(self.out / "tokenizer", lambda new: save_tokenizer(self.model, new, extra=extra))
        if self.ema is not None:
            ema_model = build_tokenizer(self.cfg.tokenizer, image_size=self.cfg.image_size)
            ema_model.load_state_dict({k: v.cpu() for k, v in self.ema.items()})
            replace_folder(self.out / "tokenizer_ema",
                           lambda new: save_tokenizer(ema_model, new, extra={**extra, "ema": self.cfg.ema}))
        return path


# ============================================================================ driver
def _resume_point(cfg: TokenizerTrainConfig) -> Optional[Path]:
    """The checkpoint to resume from (or None)."""
    latest = latest_checkpoint(cfg.out)
    if cfg.resume and latest is None:
        raise ValueError(f"--resume: no checkpoint found under {Path(cfg.out) / 'checkpoints'}")
    return latest if cfg.resume else None


@contextlib.contextmanager
def _file_log(path: Path):
    """Also send this module's log messages to `path` (out/train.log) while training."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pkg = logging.getLogger("mambagen")
    old_level = pkg.level
    pkg.addHandler(handler)
    if pkg.getEffectiveLevel() > logging.INFO:
        pkg.setLevel(logging.INFO)
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(old_level)
        handler.close()


def train_tokenizer(cfg: TokenizerTrainConfig, train_set=None, val_set=None) -> Path:
    """Train a tokenizer as configured; returns the final tokenizer directory (out/tokenizer).

    `train_set` / `val_set` replace the ImageFolder datasets of `cfg.data` / `cfg.val_data` (any dataset
    of ((3, S, S) float in [-1, 1], label) items; `set_epoch(epoch, seed)` is called when present).
    SIGINT/SIGTERM stop it after the current step with a checkpoint (`TrainingInterrupted`).
    """
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    resolve_device(cfg.device)            # bad input first: nothing is written before it is checked
    if train_set is None:
        train_set, built_val = build_datasets(cfg)
        val_set = built_val if val_set is None else val_set
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than --batch-size {cfg.batch_size}")
    with cleanup_failed_start(out):
        lock = claim_run_folder(out, resume=cfg.resume, overwrite=cfg.overwrite, marks=RUN_MARKS, written=RUN_FILES)
        try:
            CheckpointFolders(out / "checkpoints").recover()
            resume_from = _resume_point(cfg)
            with _file_log(out / "train.log"):
                trainer = TokenizerTrainer(cfg, train_set, val_set)
                n_params = sum(p.numel() for p in trainer.model.parameters())
                log.info(f"tokenizer {cfg.tokenizer}: {n_params:,} params, {len(train_set)} training images, "
                         f"{len(val_set) if val_set is not None else 'no'} validation images, device {trainer.device}")
                logger = RunLogger(out)
                if resume_from is not None:
                    trainer.load_checkpoint(resume_from)
                    logger.truncate_after(trainer.step)  # drop the crashed tail so curves have no duplicates
                    log.info(f"resumed from {resume_from} at step {trainer.step}")
                try:
                    _train_loop(trainer, logger, tqdm)
                    path = trainer.export()
                    log.info(f"final tokenizer: {path}")
                    return path
                finally:
                    logger.plot()
                    logger.close()
        finally:
            lock.release()


def _train_loop(trainer: TokenizerTrainer, logger: RunLogger, tqdm) -> None:
    """Steps until cfg.steps; SIGINT/SIGTERM end it after the step in hand, with a checkpoint."""
    cfg = trainer.cfg
    pin = trainer.device.type == "cuda"
    batches = train_batches(trainer.train_set, cfg, trainer.step, pin)
    sums, counts, n, t_last = {}, {}, 0, time.time()
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train-tokenizer", unit="step",
               disable=not cfg.progress, dynamic_ncols=True)
    try:
        with StopSignals() as stop:
            while trainer.step < cfg.steps:
                if stop.requested:
                    bar.close()
                    done = trainer.last_checkpoint
                    path = done if done is not None and done.name == trainer.checkpoints.path(trainer.step).name \
                        else trainer.save_checkpoint()
                    raise TrainingInterrupted(stop.requested, trainer.step, path)
                scalars = trainer.train_step(next(batches))
                trainer.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
                for k, v in scalars.items():  # some terms exist only on some steps (GAN after disc_start)
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                n += 1
                step, last = trainer.step, trainer.step == cfg.steps
                if step % cfg.log_every == 0 or last:
                    means = {k: v / counts[k] for k, v in sums.items()}  # averaged since the last log
                    means["lr"] = scalars["lr"]  # the current rate, not the average
                    means["images_per_s"] = n * cfg.batch_size / max(time.time() - t_last, 1e-9)
                    logger.log(step, "train", **means)
                    sums, counts, n, t_last = {}, {}, 0, time.time()
                if step % cfg.eval_every == 0 or last:
                    split, metrics, grid = trainer.evaluate()
                    logger.log(step, split, **metrics)
                    logger.plot()
                    log.info(f"step {step} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                             + f"; grid {grid}")
                if step % cfg.ckpt_every == 0 or last:
                    log.info(f"checkpoint {trainer.save_checkpoint()}")
    finally:
        bar.close()
