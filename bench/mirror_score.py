"""How mirror-symmetric a set of images is (the AiM paper's "mirror artifacts" without position embeddings).

Per image: the correlation of its centred grey levels with the same image flipped left-right (and, separately,
top-bottom); reported as the mean over the set, for the samples and for real images of the same classes.
Usage: python bench/mirror_score.py SAMPLES(.npz|folder) REAL(.npz|folder) OUT.json
"""
import json
import sys

import numpy as np

from mambagen.eval.sets import load_image_set


def symmetry(images: np.ndarray) -> dict:
    g = images.astype(np.float64).mean(-1)                        # (N, H, W) grey
    g = g - g.mean(axis=(1, 2), keepdims=True)
    norm = np.sqrt((g * g).sum(axis=(1, 2))) + 1e-9

    def corr(flipped):
        return float(((g * flipped).sum(axis=(1, 2)) / norm ** 2).mean())
    return {"left_right": corr(g[:, :, ::-1]), "top_bottom": corr(g[:, ::-1, :])}


if __name__ == "__main__":
    samples, real = load_image_set(sys.argv[1], progress=False), load_image_set(sys.argv[2], progress=False)
    out = {"samples": symmetry(samples.images), "real": symmetry(real.images), "n_samples": len(samples.images)}
    json.dump(out, open(sys.argv[3], "w"), indent=1)
    print(json.dumps(out))
