"""Distribution metrics between two sets of feature vectors (pure functions, our own math).

    feature_stats(feats, weights=None)            (mu (D,), sigma (D, D)) float64, optionally weighted
    frechet_distance(mu1, s1, mu2, s2)            FID when the features are Inception pool_3
    kid(real, fake)                               (mean, std) of the unbiased MMD^2, cubic kernel, over subsets
    manifold_radii(feats, k)                      (N,) squared distance to the k-th nearest neighbour
    precision_recall(real, fake, k)               improved precision / recall (Kynkaanniemi et al. 2019)
    inception_score(logits)                       (mean, std) of exp(E KL(p(y|x) || p(y))) over splits

Conventions follow the ADM evaluation suite (guided-diffusion `evaluations/evaluator.py`), which
the AiM / LlamaGen / VAR papers report with: squared Euclidean distances, k = 3 neighbourhoods
whose radius is the k-th neighbour *excluding* the point itself, precision = fraction of samples
inside some reference ball, recall = fraction of references inside some sample ball; Inception
Score over splits of 5000. KID follows Binkowski et al. 2018 (kernel (x.y / d + 1)^3, 100 subsets
of up to 1000).
"""
from __future__ import annotations

import numpy as np
import torch

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_NEIGHBOURS = 3
IS_SPLIT_SIZE = 5000


def _as_2d(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected features of shape (N, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: features contain NaN or inf")
    return x


# ------------------------------------------------------------------------------------ Fréchet
def feature_stats(feats, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), both float64.

    weights (N,), non-negative: the moments of the distribution that draws row i in proportion to
    weights[i] (reliability weights; the covariance is unbiased for them, and equals np.cov's when
    they are all equal).
    """
    x = _as_2d(feats, "feature_stats").astype(np.float64)
    if len(x) < 2:
        raise ValueError(f"feature_stats: a covariance needs at least 2 feature vectors, got {len(x)}")
    if weights is None:
        return x.mean(axis=0), np.cov(x, rowvar=False)
    w = np.asarray(weights, np.float64)
    if w.shape != (len(x),) or (w < 0).any() or np.count_nonzero(w) < 2:
        raise ValueError(f"feature_stats: weights must be (N,) = ({len(x)},), non-negative, at least 2 of them "
                         f"positive; got shape {w.shape}")
    w = w / w.sum()
    mu = w @ x
    d = x - mu
    return mu, (d * w[:, None]).T @ d / (1 - w @ w)


def effective_sample_size(weights) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted rows carry as much information (Kish)."""
    w = np.asarray(weights, np.float64)
    return float(w.sum() ** 2 / (w @ w))


def sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (D, D), by eigh.

    Eigenvalues that rounding made slightly negative are clipped to 0.
    """
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((s1 s2)^(1/2)) for PSD s1, s2 without a non-symmetric sqrtm.

    s1 s2 is similar to the PSD matrix r s2 r with r = s1^(1/2) (it equals r (r s2 r) r^-1), so both
    have the same real, non-negative eigenvalues; the trace of the root is the sum of their roots.
    """
    r = sqrtm_psd(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(s1 + s2 - 2 (s1 s2)^(1/2)), in float64. mu (D,), sigma (D, D)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2))


def frechet_distance_of(feats1, feats2) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))


# ------------------------------------------------------------------------------------ KID
def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, D), (m, D) -> (n, m): (x.y / D + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel. x (n, D), y (m, D), n, m >= 2.

    The within-set means leave out the diagonal (k(x_i, x_i)): that is what makes it unbiased,
    so it can be slightly negative when both sets come from one distribution.
    """
    n, m = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kxy.mean()


def kid(real, fake, num_subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
        device: str | torch.device = "cpu") -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of `mmd2_unbiased` over random subsets.

    Each subset draws min(subset_size, N_real, N_fake) vectors from each set without replacement
    (a seeded numpy generator, so the number is reproducible). real (N1, D), fake (N2, D).
    """
    real, fake = _as_2d(real, "kid real"), _as_2d(fake, "kid fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"kid: feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"kid: needs at least 2 vectors per set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    r = torch.as_tensor(real, dtype=torch.float64, device=device)
    f = torch.as_tensor(fake, dtype=torch.float64, device=device)
    vals = []
    for _ in range(num_subsets):
        ia = torch.as_tensor(rng.choice(len(real), m, replace=False), device=device)
        ib = torch.as_tensor(rng.choice(len(fake), m, replace=False), device=device)
        vals.append(mmd2_unbiased(r[ia], f[ib]).item())
    return float(np.mean(vals)), float(np.std(vals))


# ------------------------------------------------------------------------------------ precision / recall
def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, D), (m, D) -> (n, m) squared Euclidean distances, clipped at 0 (the matmul form rounds)."""
    return ((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :]).clamp_min_(0)


def manifold_radii(feats, k: int = PR_NEIGHBOURS, chunk: int = 1024,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, D) -> (N,) squared distance of each vector to its k-th nearest neighbour in the set.

    Position 0 of the sorted distances is the point itself, so the k-th neighbour is the
    (k+1)-th smallest value, as in the ADM suite.
    """
    x = torch.as_tensor(_as_2d(feats, "manifold_radii"), dtype=torch.float32, device=device)
    if len(x) <= k:
        raise ValueError(f"manifold_radii: k = {k} neighbours need more than {k} vectors, got {len(x)}")
    return torch.cat([pairwise_sq_dists(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(chunk)])


def inside_manifold(queries, support, radii: torch.Tensor, chunk: int = 1024,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """(Nq,) bool: is each query within radii[j] of some support vector j? queries (Nq, D), support (Ns, D)."""
    q = torch.as_tensor(queries, dtype=torch.float32, device=device)
    s = torch.as_tensor(support, dtype=torch.float32, device=device)
    r = radii.to(device)
    return torch.cat([(pairwise_sq_dists(rows, s) <= r[None, :]).any(dim=1) for rows in q.split(chunk)])


def precision_recall(real, fake, k: int = PR_NEIGHBOURS, device: str | torch.device = "cpu") -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds. real (N1, D), fake (N2, D).

    precision: share of `fake` inside the real manifold (are samples realistic?);
    recall: share of `real` inside the fake manifold (do samples cover the data?).
    """
    real, fake = _as_2d(real, "precision_recall real"), _as_2d(fake, "precision_recall fake")
    r_real, r_fake = manifold_radii(real, k, device=device), manifold_radii(fake, k, device=device)
    precision = inside_manifold(fake, real, r_real, device=device).float().mean().item()
    recall = inside_manifold(real, fake, r_fake, device=device).float().mean().item()
    return precision, recall


# ------------------------------------------------------------------------------------ Inception Score
def inception_score(logits, split_size: int = IS_SPLIT_SIZE) -> tuple[float, float]:
    """(N, C) class logits -> mean and std over consecutive splits of exp(E_x KL(p(y|x) || p(y)))."""
    x = torch.as_tensor(_as_2d(logits, "inception_score"), dtype=torch.float64)
    scores = []
    for part in x.split(split_size):
        logp = part.log_softmax(dim=1)                                       # (n, C)
        log_marginal = torch.logsumexp(logp, dim=0) - np.log(len(part))      # log mean_x p(y|x), (C,)
        kl = (logp.exp() * (logp - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
