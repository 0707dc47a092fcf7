"""`pypatch eval` names for the 4-bit PQ stores measured in issue 14 item 2 (``pq<m>x4``: m
sub-quantizers of 4 bits, e.g. ``pq64x4`` = 32 bytes per patch like ``pq32``), and an index
built from such a name: its search scores are the numpy ADC of its own codes."""
from __future__ import annotations

import numpy as np
import pytest

from pypatch.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("pq4_photos")
    for name, arr in {"astronaut.png": data.astronaut(), "rocket.png": data.rocket(),
                      "chelsea.png": data.chelsea(), "coffee.png": data.coffee(),
                      "motorcycle.png": data.stereo_motorcycle()[0],
                      "camera.png": data.camera()}.items():
        Image.fromarray(arr).save(root / name)
    return root


def test_four_bit_names_parse_and_are_listed():
    from pypatch.evaluation.rankers import config_names, describe_config, parse_config

    assert parse_config("patchify-L3-pq64x4") == {
        "regions": "L3", "mode": "crop", "store": "pq", "pq_m": 64, "pq_nbits": 4,
        "train_on": "patches"}
    assert parse_config("patchify-L3-pq64x4-pcaw192-opq-sp") == {
        "regions": "L3", "mode": "single_pass", "store": "pq", "pq_m": 64, "pq_nbits": 4,
        "train_on": "patches", "pca_dim": 192, "pca_power": -0.5, "opq": True}
    assert parse_config("patchify-L3-pq32")["pq_nbits"] == 8  # unchanged
    assert "64 x 4 bits = 32 bytes/patch" in describe_config("patchify-L3-pq64x4")
    names = set(config_names())
    assert {"patchify-L3-pq64x4", "patchify-L3-pq64x4-ms", "patchify-L3-pq32-pcaw192-opq",
            "patchify-L3-pq64x4-pcaw192-opq"} <= names
    for bad in ("patchify-L3-pq64x3", "patchify-L3-pq64x", "patchify-L3-pqx4"):
        with pytest.raises(InvalidArgumentError):
            parse_config(bad)


def test_four_bit_index_scores_are_numpy_adc(photo_dir, embedder):
    from pypatch import ImageIndex
    from pypatch.evaluation.rankers import parse_config

    kwargs = parse_config("patchify-L2-pq16x4-pcaw32-opq-sp")
    index = ImageIndex.build(photo_dir, embedder=embedder, progress=False, **kwargs)
    info = index.info()
    assert info["stored_dim"] == 32 and info["store"]["nbits"] == 4 and info["store"]["m"] == 16
    assert info["bytes_per_patch"] == 8  # 16 sub-quantizers x 4 bits
    pq = index.patch_index.pq
    assert pq.centroids.shape == (16, 16, 2)
    q = embedder.embed_query(str(photo_dir / "rocket.png"), regions="L2", mode="single_pass")
    qs = index.to_stored(q)
    hits = index.search_vectors(q, k=len(index))[0]
    for hit in hits:  # reference: q . decode(code), max over the image's patches
        decoded = index.patch_vectors(hit.image)
        lut = np.einsum("mkd,md->mk", pq.centroids, qs.reshape(16, 2)).astype(np.float64)
        codes = pq.encode(decoded)  # decoded vectors re-encode to their own codes
        adc = lut[np.arange(16)[None, :], codes].sum(1)
        assert hit.score == pytest.approx(adc.max(), abs=1e-4)
        assert hit.patch == int(np.argmax(adc))
    ref = sorted(((float(np.max(index.patch_vectors(i) @ qs)), i) for i in index.ids),
                 reverse=True)
    assert [h.image for h in hits] == [i for _, i in ref]
