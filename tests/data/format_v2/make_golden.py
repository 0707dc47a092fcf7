"""Writes the golden ImageIndex file of META format 2 (pre-transform as base64 in META JSON):

    python tests/data/format_v2/make_golden.py

Generated once with pypatch 0.1.0 before the transform moved to the native XFRM section
(META format 3). No model is run: seeded "model-space" descriptors (D=24) stand in for
embeddings, a whitened PCA-8 is fitted on them and the transformed patches go into a flat
float32 store, exactly as ImageIndex.build records them. expected.json keeps what that
pypatch returned (to_stored of fixed queries, search_vectors hits), so
tests/index/test_transform_section.py can check a newer pypatch reads the file identically.
Never regenerate these files for a format change: they stand for files already in users' hands.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INDEX_FILE = HERE / "flat_pca8_l1.ptch"
EXPECTED_FILE = HERE / "expected.json"
DIM, PCA_DIM, POWER = 24, 8, -0.5
SIZES = [(64, 48), (80, 80), (50, 70), (33, 90), (120, 40)]


def queries() -> np.ndarray:
    return np.random.default_rng(20260202).standard_normal((3, DIM)).astype(np.float32)


def build():
    from pypatch.index.image_index import ImageIndex, _make_grid
    from pypatch.index.meta import new_meta
    from pypatch.index.training import new_patch_index, transform_spec
    from pypatch.index.transform import PCATransform

    grid, spec = _make_grid("L1")
    counts = [len(grid.boxes(w, h)) for w, h in SIZES]
    rng = np.random.default_rng(20260201)
    x = rng.standard_normal((sum(counts), DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    transform = PCATransform.fit(x, PCA_DIM, POWER)
    tspec = transform_spec(PCA_DIM, POWER, False, store="flat", pq_m=None, dim=DIM,
                           train_size=len(x), seed=0, auto_dim=256, mode="single_pass")
    tspec["fitted"] = transform.to_dict()
    model = {"name": "golden-fake", "spec": None, "path": None, "sha256": None,
             "card": {"name": "golden-fake", "dim": DIM}}
    meta = new_meta(grid=grid, regions_spec=spec, mode="single_pass", store={"kind": "flat"},
                    model=model, dim=DIM, transform=tspec)
    meta.update(ids=[f"img{i}" for i in range(len(SIZES))],
                paths=[f"/photos/img{i}.jpg" for i in range(len(SIZES))],
                sizes=[list(s) for s in SIZES])
    patch_index = new_patch_index(PCA_DIM, {"kind": "flat"})
    patch_index.add(transform.apply(x), patches_per_image=counts)
    return ImageIndex(patch_index, meta)


def expected(index) -> dict:
    q = queries()
    hits = index.search_vectors(q, k=5)
    return {"to_stored": index.to_stored(q).tolist(),
            "hits": [[[h.image, h.score, h.patch] for h in row] for row in hits]}


if __name__ == "__main__":
    from pypatch.index.image_index import ImageIndex

    build().save(INDEX_FILE)
    loaded = ImageIndex.load(INDEX_FILE)  # record what the saved file gives back
    EXPECTED_FILE.write_text(json.dumps(expected(loaded), indent=1) + "\n")
    print("wrote", INDEX_FILE, EXPECTED_FILE)
