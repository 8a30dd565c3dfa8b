"""Samples vs reference: FID, KID, precision/recall (+ Inception Score, + judge), each beside a floor.

A score alone says little at small sample counts (FID is biased upwards by roughly 1/n), so
every number comes with a real-vs-real floor computed the same way at the same size:
  * `--floor-ref PATH`: real images from PATH (as many as there are samples) vs the reference, or
  * by default: n_samples images held out of the reference vs the rest of it (the run's sizes,
    nearly), or two disjoint halves when the reference has fewer than 2 n_samples images.

Reference features (and mu, sigma) are cached in an .npz keyed by the reference's fingerprint,
the network's sha1 and the reading options; a stale or foreign cache is recomputed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .inception import run_network
from .metrics import (KID_SUBSET_SIZE, KID_SUBSETS, PR_NEIGHBOURS, effective_sample_size, feature_stats,
                      frechet_distance, frechet_distance_of, inception_score, kid, precision_recall)
from .sets import ImageSet, fingerprint, load_image_set, reference_statistics

CACHE_FORMAT = "mambagen-ref-features"


# ------------------------------------------------------------------------------------ reference cache
def default_cache_path(ref: str | os.PathLike, network_sha1: str, limit: int | None, seed: int) -> Path:
    """<ref>[.n<limit>-s<seed>].inception-<sha1[:8]>.npz next to the reference file or folder."""
    ref = Path(ref).resolve()
    stem = ref.name[:-4] if ref.name.endswith(".npz") else ref.name
    tag = f".n{limit}-s{seed}" if limit else ""
    return ref.parent / f"{stem}{tag}.inception-{network_sha1[:8]}.npz"


def _cache_key(ref, network_sha1: str, image_size, limit, seed) -> dict:
    return {"format": CACHE_FORMAT, "source": str(Path(ref).resolve()), "fingerprint": fingerprint(ref),
            "network_sha1": network_sha1, "image_size": image_size, "limit": limit,
            "seed": seed if limit else None}


def read_feature_cache(path: Path, key: dict) -> np.ndarray | None:
    """The cached (N, D) features if `path` exists and was made from the same inputs, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != key:
                return None
            return z["features"]
    except (OSError, EOFError, KeyError, ValueError):
        return None


def write_feature_cache(path: Path, feats: np.ndarray, key: dict) -> bool:
    """Write features + mu + sigma; False (not an error) when the location is not writable."""
    mu, sigma = feature_stats(feats)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=feats.astype(np.float32), mu=mu, sigma=sigma, meta=np.array(json.dumps(key)))
    except OSError:
        return False
    return True


def reference_features(ref: str | os.PathLike, net, network_sha1: str, *, cache: str | os.PathLike | None = None,
                       image_size: int | None = None, limit: int | None = None, seed: int = 0,
                       batch_size: int = 50, device="cpu", progress: bool = True) -> tuple[np.ndarray, dict]:
    """(features (N, D), info) of a reference, from the cache when it is current.

    info: {"cache": path, "cache_hit": bool, "cache_written": bool, "count": N}.
    """
    key = _cache_key(ref, network_sha1, image_size, limit, seed)
    path = Path(cache) if cache is not None else default_cache_path(ref, network_sha1, limit, seed)
    feats = read_feature_cache(path, key)
    if feats is not None:
        return feats, {"cache": str(path), "cache_hit": True, "cache_written": False, "count": len(feats)}
    images = load_image_set(ref, image_size, limit, seed, progress)
    feats = run_network(net, images.images, batch_size, device, progress, desc="reference features")
    written = write_feature_cache(path, feats, key)
    return feats, {"cache": str(path), "cache_hit": False, "cache_written": written, "count": len(feats)}


# ------------------------------------------------------------------------------------ scores and floors
def distribution_scores(real: np.ndarray, fake: np.ndarray, *, k: int = PR_NEIGHBOURS, kid_subsets: int = KID_SUBSETS,
                        kid_subset_size: int = KID_SUBSET_SIZE, seed: int = 0, device="cpu") -> dict:
    """FID, KID (mean, std), precision, recall of `fake` against `real` features (N, D)."""
    kid_mean, kid_std = kid(real, fake, kid_subsets, kid_subset_size, seed, device)
    precision, recall = precision_recall(real, fake, k, device)
    # when the subsets are the whole sets every subset is the same and kid_std is 0
    used = min(kid_subset_size, len(real), len(fake))
    return {"fid": frechet_distance_of(real, fake), "kid": kid_mean, "kid_std": kid_std, "kid_subset_size_used": used,
            "precision": precision, "recall": recall, "n_real": len(real), "n_fake": len(fake)}


def reference_batch_fid(ref, feats: np.ndarray, fid_from_images: float) -> dict:
    """The FID as published: from an ADM reference batch's own mu/sigma when it has them (the ADM
    evaluator's protocol; `fid_from_images` is kept beside it), else the FID from the reference's images.
    sFID needs Inception's spatial features, which the pool-feature network does not give."""
    stats = reference_statistics(ref)
    if stats is None:
        return {"fid": fid_from_images, "fid_source": "features of the reference images", "sfid": None,
                "sfid_reason": "needs an ADM reference batch (mu_s, sigma_s) and spatial features"}
    if stats["mu"].shape[0] != feats.shape[1]:
        raise ValueError(f"{ref}: its mu has {stats['mu'].shape[0]} dimensions but the feature network gives "
                         f"{feats.shape[1]}: use the Inception network the batch was made with")
    return {"fid": frechet_distance(stats["mu"], stats["sigma"], *feature_stats(feats)),
            "fid_from_images": fid_from_images,
            "fid_source": "the reference batch's mu/sigma (the ADM evaluator's protocol)", "sfid": None,
            "sfid_reason": ("the feature network gives pool features only; sFID needs Inception's spatial features"
                            if "mu_s" in stats else "the reference batch has no mu_s/sigma_s")}


def floor_split(n_ref: int, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(real, stand-in samples): two disjoint random index sets of range(n_ref).

    With room (n_ref >= 2 n_samples), n_samples reference images play the samples and all the
    others the reference - the same sizes as the real run, up to the held-out part - because
    FID's bias depends on both sizes. Otherwise two halves of n_ref // 2.
    """
    m = n_samples if n_ref >= 2 * n_samples else n_ref // 2
    if m < 2:
        raise ValueError(f"the reference has {n_ref} images: too few to split for a real-vs-real floor")
    perm = np.random.default_rng(seed).permutation(n_ref)
    fake = perm[:m]
    real = perm[m:] if n_ref >= 2 * n_samples else perm[m:2 * m]
    return np.sort(real), np.sort(fake)


def floor_pair(ref: np.ndarray, n_samples: int, seed: int, floor_ref: np.ndarray | None = None):
    """(real, fake, description) of the real-vs-real comparison matching a run with n_samples samples."""
    if floor_ref is not None:
        m = min(n_samples, len(floor_ref))
        idx = np.sort(np.random.default_rng(seed).choice(len(floor_ref), m, replace=False))
        return ref, floor_ref[idx], f"{m} --floor-ref images vs the reference ({len(ref)})"
    real, fake = floor_split(len(ref), n_samples, seed)
    if len(real) == len(fake):
        what = f"two disjoint halves of the reference ({len(fake)} vs {len(real)} images)"
    else:
        what = f"{len(fake)} held-out reference images vs the other {len(real)}"
    return ref[real], ref[fake], what


def floor_scores(ref: np.ndarray, n_samples: int, *, floor_ref: np.ndarray | None = None, seed: int = 0,
                 **score_kwargs) -> dict:
    real, fake, what = floor_pair(ref, n_samples, seed, floor_ref)
    return {"kind": what, **distribution_scores(real, fake, seed=seed, **score_kwargs)}


def inception_score_of(net, images: np.ndarray, batch_size: int = 50, device="cpu", progress: bool = True) -> dict:
    """IS from a logits network (N, C); refuses a network that returns 2048-d pool features."""
    logits = run_network(net, images, batch_size, device, progress, desc="IS logits")
    if logits.shape[1] == 2048:
        raise ValueError("--is-network returns 2048-d outputs: those look like pool features, not class logits "
                         "(the Inception Score needs the 1008-way softmax logits)")
    mean, std = inception_score(logits)
    return {"available": True, "inception_score": mean, "inception_score_std": std, "classes": logits.shape[1],
            "n": len(logits)}


# ------------------------------------------------------------------------------------ judge
def _per_class(logits, labels, names) -> dict:
    from .judge import accuracy
    return {names[c] if names else str(c): accuracy(logits[labels == c], labels[labels == c])
            for c in np.unique(labels).tolist()}


def judge_reconstruction_fd(model, images: np.ndarray, recons: np.ndarray, *, seed: int = 0, device="cpu") -> dict:
    """A tokenizer's Fréchet distance in judge features: the real images of one random half against the
    reconstructions of the other half, beside the floor of the same sizes (real half vs real half), so
    neither the FD's size bias nor pairing an image with its own reconstruction flatters it."""
    from .judge import judge_outputs
    real, fake = floor_split(len(images), len(images), seed)          # two disjoint halves
    feats = judge_outputs(model, images, device=device)[1]
    rec = judge_outputs(model, recons[fake], device=device)[1]
    real_stats = feature_stats(feats[real])
    return {"fd": frechet_distance(*real_stats, *feature_stats(rec)),
            "fd_floor": frechet_distance(*real_stats, *feature_stats(feats[fake])),
            "kind": f"{len(real)} real images vs the reconstructions of {len(fake)} others (floor: those {len(fake)} "
                    "real images)"}


def class_matching_weights(sample_labels, ref_labels) -> tuple[np.ndarray | None, str]:
    """(weights (N_samples,) or None, what the FD compares) that give the samples the reference's class mix.

    A Fréchet distance between two sets with different class mixes measures the mixes as much as the
    images: 40 real training images per class against a val split where a few classes hold most
    images scores as badly as a weak generator. Weighting each sample by p_ref(class) / p_samples(class)
    compares the generator's images under the reference's mix, as the real-vs-real floor does.
    """
    if sample_labels is None or ref_labels is None:
        return None, "unweighted (the samples or the reference carry no labels)"
    ref_classes = np.unique(ref_labels)
    missing = np.setdiff1d(ref_classes, sample_labels)
    if len(missing):
        return None, (f"unweighted: the samples have no image of {len(missing)} of the reference's classes "
                      f"(ids {missing[:5].tolist()}{'...' if len(missing) > 5 else ''})")
    n = max(int(sample_labels.max()), int(ref_labels.max())) + 1
    p_ref = np.bincount(ref_labels, minlength=n) / len(ref_labels)
    p_samples = np.bincount(sample_labels, minlength=n) / len(sample_labels)
    weights = p_ref[sample_labels] / p_samples[sample_labels]
    if np.allclose(weights, 1.0):
        return None, "unweighted (the samples already have the reference's class mix)"
    return weights, (f"samples weighted to the reference's class mix (effective size "
                     f"{effective_sample_size(weights):.0f} of {len(weights)})")


def judge_scores(model, meta: dict, samples: ImageSet, ref: ImageSet, *, floor_set: ImageSet | None = None,
                 seed: int = 0, device="cpu") -> dict:
    """Class accuracy of labelled samples and a Fréchet distance in the judge's features, with floors.

    The FD weights the samples to the reference's class mix when both carry labels
    (class_matching_weights), and the floor's stand-in set has the weighted samples' effective size.
    """
    from .judge import accuracy, judge_outputs

    K = model.config.num_classes
    names = list(model.config.classes)
    if names and ref.classes and ref.classes != names:
        raise ValueError(f"the reference's class folders {ref.classes} differ from the judge's {names}: "
                         "labels would not line up")
    s_logits, s_feats = judge_outputs(model, samples.images, device=device)
    r_logits, r_feats = judge_outputs(model, ref.images, device=device)
    out = {"judge_val_accuracy": meta.get("val_accuracy"), "n_samples": len(samples), "n_reference": len(ref)}
    if samples.labels is not None:
        if samples.labels.max() >= K or samples.labels.min() < 0:
            raise ValueError(f"sample labels span {samples.labels.min()}..{samples.labels.max()} but the judge "
                             f"knows {K} classes")
        out["sample_accuracy"] = accuracy(s_logits, samples.labels)
        out["per_class_accuracy"] = _per_class(s_logits, samples.labels, names)
    if ref.labels is not None:
        out["reference_accuracy"] = accuracy(r_logits, ref.labels)
        out["reference_per_class_accuracy"] = _per_class(r_logits, ref.labels, names)
    weights, out["fd_kind"] = class_matching_weights(samples.labels, ref.labels)
    ref_stats = feature_stats(r_feats)
    out["fd"] = frechet_distance(*ref_stats, *feature_stats(s_feats, weights))
    if weights is not None:
        out["fd_unmatched"] = frechet_distance(*ref_stats, *feature_stats(s_feats))
    n_effective = len(samples) if weights is None else round(effective_sample_size(weights))
    floor_feats = judge_outputs(model, floor_set.images, device=device)[1] if floor_set is not None else None
    real, fake, what = floor_pair(r_feats, n_effective, seed, floor_feats)
    out["fd_floor"] = frechet_distance(*feature_stats(real), *feature_stats(fake))
    out["floor_kind"] = what
    return out
