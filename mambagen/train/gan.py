"""Adversarial and perceptual losses for stage-1 (tokenizer) training.

* `NLayerDiscriminator`: the PatchGAN of pix2pix / taming-transformers / LlamaGen: 4x4 convolutions,
  `n_layers` of them with stride 2, LeakyReLU(0.2), one logit per overlapping patch. The norm is
  GroupNorm by default (BatchNorm as in taming with `norm="batch"`): with the small per-GPU batches of
  tokenizer training, batch statistics are noisy, and under DDP they are per-process unless synced;
  GroupNorm behaves the same for any batch size and needs no synchronisation.
* Hinge losses: d = mean(relu(1 - D(real))) + mean(relu(1 + D(fake))), g = -mean(D(fake)); both only
  from `disc_start` on (`gan_active`), so the autoencoder first learns to reconstruct.
* `adaptive_weight`: taming's balance of the reconstruction and adversarial gradients at the
  decoder's last layer (optional).
* `FeatureDistance`: the same construction over the stages of a judge trained here (`train-judge`), a
  perceptual loss that needs no downloaded weights (`load_perceptual` takes either).
* `LPIPS`: the LPIPS-VGG16 perceptual distance, built here (no torchvision) and loaded only from a
  weights file the user provides (`load_lpips`). Keys: torchvision's `features.N.weight/bias` for the
  VGG16 convolutions and LPIPS's `lin0..lin4.model.1.weight` for the linear heads; the layouts of the
  `lpips` package / taming (`net.sliceK.N.*`, `scaling_layer.*`) are mapped to these.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import CheckpointError, load_state_dict_strict, load_weights, unwrap_state_dict


# ============================================================================ discriminator
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown discriminator norm {kind!r} (group or batch)")


class NLayerDiscriminator(nn.Module):
    """PatchGAN: (B, 3, H, W) -> patch logits (B, 1, H / 2**n_layers - 2, W / 2**n_layers - 2)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3, norm: str = "group"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"discriminator n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        layers = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden conv keeps the resolution
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride=stride, padding=1, bias=False),
                       _norm(norm, channels * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the DCGAN initialisation used by pix2pix and taming
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def min_image_size(n_layers: int) -> int:
        # n stride-2 convs halve the size; the two 4x4 stride-1 convs then take 1 pixel each
        return 3 * 2 ** n_layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        H, W = images.shape[-2:]
        need = self.min_image_size(self.n_layers)
        if H < need or W < need:
            raise ValueError(f"discriminator with {self.n_layers} layers needs images of at least {need}x{need}, "
                             f"got {H}x{W}; use fewer layers")
        return self.main(images)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def gan_active(step: int, disc_start: int) -> bool:
    """The adversarial terms (generator and discriminator) are on from step `disc_start` (0-based)."""
    return step >= disc_start


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """||grad rec|| / ||grad g|| at `last_layer` (taming), so neither term swamps the other; detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# ============================================================================ LPIPS-VGG16
# torchvision's vgg16().features up to relu5_3 ("M" = 2x2 max pool); LPIPS taps the ReLUs after
# conv1_2, conv2_2, conv3_3, conv4_3, conv5_3, which are features.3, .8, .15, .22, .29
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS input normalisation for images in [-1, 1] (ImageNet statistics rescaled to that range)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    layers, in_ch = [], 3
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU()]
            in_ch = v
    return nn.Sequential(*layers)


class NetLinLayer(nn.Module):
    """1x1 conv to one channel; index 0 is LPIPS's dropout (inactive at evaluation), so keys read model.1."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


def unit_feature_diff(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """LPIPS's comparison of two feature maps (B, C, h, w): each position's feature vector unit-normalised,
    then squared differences per channel (B, C, h, w)."""
    unit = lambda f: f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
    return (unit(fx) - unit(fy)).pow(2)


class LPIPS(nn.Module):
    """LPIPS distance between images in [-1, 1]: (B, 3, H, W) x 2 -> (B,). Frozen; 0 for identical images."""
    metric = "lpips"   # the name its validation mean is logged under

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        for i, ch in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{i}", NetLinLayer(ch))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always in evaluation mode: it is a fixed metric

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LPIPS_TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two image batches of one shape (B, 3, H, W), got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        total = 0.0
        for i, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            diff = getattr(self, f"lin{i}")(unit_feature_diff(fx, fy))  # a learned weighting: (B, 1, h, w)
            total = total + diff.mean(dim=(1, 2, 3))  # (B,)
        return total


class FeatureDistance(nn.Module):
    """A perceptual distance from the stages of a CNN trained here (a `mambagen train-judge` directory),
    built like LPIPS: each stage's features unit-normalised per position, squared differences averaged,
    summed over the stages, with equal weights where LPIPS learns its heads. Images in [-1, 1]:
    (B, 3, H, W) x 2 -> (B,), resized to the network's size first. Frozen; 0 for identical images.
    It needs no downloaded weights; score the results with another judge (another --seed) than this one."""
    metric = "judge_perceptual"

    def __init__(self, stages: nn.Sequential, size: int):
        super().__init__()
        self.stages, self.size = stages, size
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"the perceptual distance expects two image batches of one shape (B, 3, H, W), got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x, y = (F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False) for t in (x, y))
        total = 0.0
        for stage in self.stages:
            x, y = stage(x), stage(y)
            total = total + unit_feature_diff(x, y).sum(dim=1).mean(dim=(1, 2))   # equal weights: (B,)
        return total


def load_perceptual(path: str | os.PathLike, device="cpu") -> nn.Module:
    """The perceptual distance behind --perceptual-weights: a judge directory -> `FeatureDistance` over its
    stages; a file -> LPIPS-VGG16 (`load_lpips`)."""
    if os.path.isdir(path):
        from ..eval.judge import load_judge
        try:
            judge, _ = load_judge(path, device)
        except CheckpointError as e:
            raise CheckpointError(f"--perceptual-weights {path}: a folder must be a judge (mambagen train-judge): {e}") from None
        return FeatureDistance(judge.stages, judge.config.image_size).to(device)
    return load_lpips(path, device)


_IGNORED_PREFIXES = ("scaling_layer.", "classifier.")  # fixed constants / torchvision's VGG classifier
_WRAPPER_PREFIXES = ("module.", "perceptual_loss.")


def _canonical_lpips_key(key: str) -> str | None:
    """Map a key of the supported layouts to ours; None for keys that are deliberately ignored."""
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    if key.startswith(_IGNORED_PREFIXES):
        return None
    if key.startswith("net.slice"):  # lpips/taming: net.slice<k>.<torchvision index>.weight
        _, _, rest = key.split(".", 2)
        return f"features.{rest}"
    return key


def lpips_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a raw LPIPS-VGG16 state dict to our keys (features.N.*, linK.model.1.weight)."""
    out = {}
    for k, v in raw.items():
        ck = _canonical_lpips_key(k)
        if ck is not None:
            out[ck] = v
    return out


def load_lpips(path: str | os.PathLike, device="cpu") -> LPIPS:
    """LPIPS-VGG16 from one weights file (.safetensors, or .pt/.pth read without unpickling code)
    holding the VGG16 convolutions and the five linear heads. Missing, extra or misshapen keys are an
    error naming them."""
    if not os.path.isfile(path):
        raise CheckpointError(f"--perceptual-weights {path}: file not found")
    state = lpips_state_dict(unwrap_state_dict(load_weights(path)))
    model = LPIPS()
    load_state_dict_strict(model, {k: v.float() for k, v in state.items()},
                           f"{path} (expected torchvision VGG16 keys features.N.weight/bias and LPIPS heads "
                           f"lin0..lin4.model.1.weight)")
    return model.to(device)
