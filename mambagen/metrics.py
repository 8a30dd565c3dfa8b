"""Image reconstruction metrics (pure functions). Images are (B, C, H, W) floats, by default in [-1, 1].

    psnr(x, y)                       (B,) dB; inf where the images are identical
    ssim(x, y)                       (B,) structural similarity (Wang et al. 2004), 1 for identical images
    codebook_usage(ids, size)        fraction of the codebook used at least once by `ids`
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{what}: images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"{what}: expected images of shape (B, C, H, W), got {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: 10 log10(data_range^2 / MSE) -> (B,), float32.

    `data_range` is max - min of the value range: 2 for [-1, 1] images, 255 for uint8.
    """
    _check_pair(x, y, "psnr")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return 10 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel (size, size)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM per image -> (B,): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03.

    Local statistics are taken over 'valid' window positions only (no padding, as the reference
    implementation), per channel; the SSIM map is averaged over positions and then channels.
    """
    _check_pair(x, y, "ssim")
    B, C, H, W = x.shape
    if H < SSIM_WINDOW or W < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} (the Gaussian window), "
                         f"got {H}x{W}")
    x, y = x.float(), y.float()
    window = gaussian_window().to(x.device).expand(C, 1, SSIM_WINDOW, SSIM_WINDOW)  # depthwise (C, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, window, groups=C)  # (B, C, H-10, W-10)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)  # per channel, then averaged -> (B,)


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the `codebook_size` codes that occur at least once in `ids` (any shape)."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if ids.is_floating_point():
        raise ValueError(f"code ids must be integers, got dtype {ids.dtype}")
    if ids.numel() == 0:
        return 0.0
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= codebook_size:
        raise ValueError(f"code id {lo if lo < 0 else hi} out of range [0, {codebook_size})")
    return torch.unique(ids).numel() / codebook_size
