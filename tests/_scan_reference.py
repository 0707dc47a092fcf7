"""numpy reference of the per-image max scan: scores -> (best, argbest) per image -> top-k."""
from __future__ import annotations

import numpy as np


def reference_search(patch_scores: np.ndarray, offsets: np.ndarray, k: int, removed=None):
    """patch_scores (nq, n_patches); returns (scores, images, patches) (nq, k) like search()."""
    nq = patch_scores.shape[0]
    n_images = len(offsets) - 1
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    out_p = np.full((nq, k), -1, dtype=np.int64)
    for qi in range(nq):
        best, arg, img = [], [], []
        for i in range(n_images):
            a, b = offsets[i], offsets[i + 1]
            if a == b or (removed is not None and removed[i]):
                continue  # empty or removed images are never returned
            seg = patch_scores[qi, a:b]
            j = int(np.argmax(seg))  # first maximum on ties
            best.append(seg[j]); arg.append(j); img.append(i)
        best, arg, img = np.array(best, np.float32), np.array(arg), np.array(img)
        order = np.lexsort((img, -best))[:k]  # score desc, then image index asc
        n = len(order)
        out_s[qi, :n], out_i[qi, :n], out_p[qi, :n] = best[order], img[order], arg[order]
    return out_s, out_i, out_p


def random_offsets(rng, n_images: int, max_patches: int) -> np.ndarray:
    """CSR offsets with empty, single-patch and many-patch images."""
    counts = rng.integers(0, max_patches + 1, size=n_images)
    counts[:3] = [0, 1, max_patches][: min(3, n_images)]
    rng.shuffle(counts)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
