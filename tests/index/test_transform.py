"""PCA pre-transform (pypatch.index.transform) and its use inside ImageIndex.

References: scikit-learn's PCA (projection, whitening), numpy eigen-decomposition (eigenvalue
power), per-image max over the Embedder's own descriptors projected with numpy, and the raw
JSON of saved index files edited by hand (corruption must raise IndexFormatError).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch.errors import IndexFormatError, InvalidArgumentError, InvalidTypeError  # noqa: E402
from pypatch.index.transform import PCATransform  # noqa: E402


def _pixel_patches(n: int = 3000, side: int = 6) -> np.ndarray:
    """Real data without a model: (n, 3*side*side) RGB patches of the astronaut photo."""
    img = skimage_data.astronaut().astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    ys = rng.integers(0, img.shape[0] - side, n)
    xs = rng.integers(0, img.shape[1] - side, n)
    return np.stack([img[y:y + side, x:x + side].ravel() for y, x in zip(ys, xs)])


def _l2n(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _align_signs(got, ref):
    """PCA axes are defined up to sign: flip got's columns to agree with ref's."""
    s = np.sign(np.sum(got * ref, axis=0))
    return got * np.where(s == 0, 1, s)


@pytest.mark.parametrize("whiten", [False, True])
def test_projection_and_whitening_match_scikit_learn(whiten):
    from sklearn.decomposition import PCA

    x = _pixel_patches()
    t = PCATransform.fit(x, 24, power=-0.5 if whiten else 0.0)
    ref = _l2n(PCA(n_components=24, whiten=whiten, svd_solver="full").fit(x).transform(x))
    got = t.apply(x)
    assert got.shape == (len(x), 24) and got.dtype == np.float32
    np.testing.assert_allclose(_align_signs(got, ref), ref, atol=2e-4)
    one = t.apply(x[7])  # a single query vector
    np.testing.assert_allclose(one, got[7], atol=1e-6)


def test_eigenvalue_power_matches_numpy_svd():
    x = _pixel_patches().astype(np.float64)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s[:10] ** 2 / (len(x) - 1)
    ref = _l2n(xc @ vt[:10].T * eig ** -0.25)
    t = PCATransform.fit(x, 10, power=-0.25)
    np.testing.assert_allclose(t.eigenvalues, eig, rtol=1e-4)
    np.testing.assert_allclose(_align_signs(t.apply(x), ref), ref, atol=2e-4)


def test_additive_eps_regularises_every_variance():
    # PCAWhitening's regulariser: scale (eigenvalue + eps) ** power, not the relative floor
    x = _pixel_patches().astype(np.float64)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = s[:10] ** 2 / (len(x) - 1)
    eps = float(eig[-1])  # large enough to change the relative weights of the axes
    ref = _l2n(xc @ vt[:10].T * (eig + eps) ** -0.5)
    got = PCATransform.fit(x, 10, power=-0.5, eps=eps).apply(x)
    np.testing.assert_allclose(_align_signs(got, ref), ref, atol=2e-4)
    plain = _l2n(xc @ vt[:10].T * eig ** -0.5)
    assert np.abs(_align_signs(got, plain) - plain).max() > 1e-2
    for bad in (-1.0, float("nan"), "0.1", True):
        with pytest.raises(InvalidArgumentError, match="eps"):
            PCATransform.fit(x, 10, power=-0.5, eps=bad)


def test_dict_round_trip_and_corruption():
    x = _pixel_patches(500)
    t = PCATransform.fit(x, 8, power=-0.5)
    d = t.to_dict()
    back = PCATransform.from_dict(d)
    np.testing.assert_array_equal(back.apply(x), t.apply(x))
    bad = dict(d, matrix=dict(d["matrix"], data="A" + d["matrix"]["data"][1:]))
    with pytest.raises(IndexFormatError, match="sha256"):
        PCATransform.from_dict(bad)
    with pytest.raises(IndexFormatError, match="shape"):
        PCATransform.from_dict(dict(d, dim_out=9))
    with pytest.raises(IndexFormatError):
        PCATransform.from_dict(dict(d, kind="opq"))
    with pytest.raises(InvalidArgumentError, match="expected shape"):
        t.apply(np.zeros((2, 5), np.float32))


def test_bad_fit_arguments_raise_typed_errors():
    x = _pixel_patches(100)
    for dim, error in ((0, InvalidArgumentError), (x.shape[1] + 1, InvalidArgumentError),
                       (2.5, InvalidTypeError), (True, InvalidTypeError)):
        with pytest.raises(error, match="pca_dim"):
            PCATransform.fit(x, dim)
    with pytest.raises(InvalidArgumentError, match="pca_power"):
        PCATransform.fit(x, 4, power=0.5)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        PCATransform.fit(np.full((4, 3), np.nan), 2)


# ---------------------------------------------------------------------- inside ImageIndex
@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pca_photos")
    d = skimage_data
    for name, arr in {"astronaut.png": d.astronaut(), "rocket.png": d.rocket(),
                      "chelsea.png": d.chelsea(), "coffee.png": d.coffee(),
                      "motorcycle.png": d.stereo_motorcycle()[0],
                      "camera.png": d.camera()}.items():
        Image.fromarray(arr).save(root / name)
    return root


@pytest.fixture(scope="module")
def pca_flat(photo_dir, embedder):
    from pypatch import ImageIndex

    return ImageIndex.build(photo_dir, regions="L2", store="flat", mode="single_pass",
                            pca_dim=32, pca_power=-0.5, embedder=embedder, progress=False)


def test_database_and_query_share_the_fitted_transform(pca_flat, photo_dir, embedder):
    ids = pca_flat.ids
    patches = {i: embedder.embed_patches(str(photo_dir / i), regions="L2",
                                         mode="single_pass")[0] for i in ids}
    # fitted on every database patch (84 < train_size): the same fit from numpy's side
    ref_t = PCATransform.fit(np.concatenate([patches[i] for i in ids]), 32, power=-0.5)
    np.testing.assert_allclose(pca_flat.transform.matrix, ref_t.matrix, atol=1e-4)
    info = pca_flat.info()
    assert info["stored_dim"] == 32 and info["dim"] == 1280
    assert info["bytes_per_image"] == pytest.approx(14 * 32 * 4 + 8)
    assert info["transform"]["power"] == -0.5 and "fitted" not in info["transform"]

    box = [150, 50, 350, 250]
    q = embedder.embed_query(str(photo_dir / "chelsea.png"), box=box, regions="L2",
                             mode="single_pass")  # as ImageIndex.search embeds it
    qt = ref_t.apply(q)
    ref = sorted(((-float(np.max(ref_t.apply(patches[i]) @ qt)), i) for i in ids))
    hits = pca_flat.search(str(photo_dir / "chelsea.png"), box=box, k=len(ids))
    assert [h.image for h in hits] == [r[1] for r in ref]
    np.testing.assert_allclose([h.score for h in hits], [-r[0] for r in ref], atol=1e-4)
    assert hits[0].image == "chelsea.png"
    # precomputed model descriptors go through the same transform; stored ones do not
    by_vec = pca_flat.search_vectors(q, k=3)[0]
    by_stored = pca_flat.search_vectors(pca_flat.to_stored(q), k=3, stored=True)[0]
    assert [h.image for h in by_vec] == [h.image for h in by_stored] == [h.image for h in hits[:3]]
    with pytest.raises(InvalidArgumentError, match="1280"):
        pca_flat.search_vectors(qt, k=3)


def test_second_stage_runs_in_the_stored_space(pca_flat, photo_dir):
    q = str(photo_dir / "rocket.png")
    first = pca_flat.search(q, k=4)
    qe = pca_flat.search(q, k=4, rerank="qe", qe_n=2)
    mp = pca_flat.search(q, k=4, rerank="multipatch")
    cells = pca_flat.search(q, k=4, refine="cells")
    assert first[0].image == qe[0].image == mp[0].image == cells[0].image == "rocket.png"
    assert [h.image for h in cells] == [h.image for h in first]


def test_save_load_round_trip_keeps_the_transform(pca_flat, photo_dir, tmp_path):
    from pypatch import ImageIndex

    path = tmp_path / "pca.ptch"
    pca_flat.save(path)
    back = ImageIndex.load(path)
    assert back._meta["format"] == 3  # older readers (format <= 2) refuse it with IndexVersionError
    np.testing.assert_array_equal(back.transform.matrix, pca_flat.transform.matrix)
    np.testing.assert_array_equal(back.transform.mean, pca_flat.transform.mean)
    back.set_embedder(pca_flat._get_embedder())
    q = str(photo_dir / "coffee.png")
    a, b = pca_flat.search(q, k=6), back.search(q, k=6)
    assert [(h.image, h.patch) for h in a] == [(h.image, h.patch) for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
    # images added after loading go through the stored transform too
    flipped = np.ascontiguousarray(skimage_data.astronaut()[:, ::-1])
    back.add([("flipped", flipped)], progress=False)
    hit = back.search(flipped, k=1)[0]
    emb = pca_flat._get_embedder()
    vecs = emb.embed_patches(flipped, regions="L2", mode="single_pass")[0]
    q = emb.embed_query(flipped, regions="L2", mode="single_pass")
    ref = pca_flat.transform.apply(vecs) @ pca_flat.transform.apply(q)
    assert hit.image == "flipped" and hit.patch == int(np.argmax(ref))
    assert hit.score == pytest.approx(float(ref.max()), abs=1e-4)


def _rewrite_meta(src, dst, edit):
    """Load a saved ImageIndex file as a plain PatchIndex, edit its image metadata, save."""
    from pypatch import PatchIndex
    from pypatch.index.meta import META_KEY

    pidx = PatchIndex.load(src, mmap=False)
    meta = dict(pidx.metadata)
    edit(meta[META_KEY])
    pidx.metadata = meta
    pidx.save(dst)


def test_corrupted_or_mismatched_stored_matrix_raises(pca_flat, tmp_path):
    from pypatch import ImageIndex

    good = tmp_path / "good.ptch"
    pca_flat.save(good)

    def flip_data(m):  # the matrix itself lives in XFRM (tests/index/test_transform_section.py)
        rec = m["transform"]["fitted"]["eigenvalues"]
        rec["data"] = ("B" if rec["data"][0] != "B" else "C") + rec["data"][1:]

    def other_shape(m):
        m["transform"]["fitted"]["dim_out"] = 16

    def dropped(m):
        del m["transform"]["fitted"]

    def no_transform(m):
        m["transform"] = None

    for edit, match in ((flip_data, "sha256"), (other_shape, "shape"),
                        (dropped, "no fitted matrix"), (no_transform, "no transform")):
        bad = tmp_path / f"{edit.__name__}.ptch"
        _rewrite_meta(good, bad, edit)
        with pytest.raises(IndexFormatError, match=match):
            ImageIndex.load(bad)


def test_pq_on_the_projected_vectors(photo_dir, embedder):
    from pypatch import ImageIndex

    # 6 images x 14 cells = 84 training vectors >= 16 centroids of 4-bit PQ
    index = ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=8, pq_nbits=4,
                             mode="single_pass", pca_dim=32, pca_power=-0.25,
                             embedder=embedder, progress=False)
    info = index.info()
    assert info["stored_dim"] == 32 and info["store"]["trained_on_vectors"] == 84
    assert info["transform"]["opq"] is True  # opq="auto": on for PQ after a PCA
    assert info["bytes_per_image"] == pytest.approx(14 * 8 * 4 / 8 + 8)
    for name in ("astronaut.png", "rocket.png", "coffee.png"):
        assert index.search(str(photo_dir / name), k=1)[0].image == name
    with pytest.raises(InvalidArgumentError, match="pq_m"):
        ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=5, pca_dim=32,
                         embedder=embedder, progress=False)
    with pytest.raises(InvalidArgumentError, match="pca_dim"):
        ImageIndex.build(photo_dir, regions="L2", store="flat", pca_dim=4096,
                         embedder=embedder, progress=False)
    with pytest.raises(InvalidArgumentError, match="opq"):
        ImageIndex.build(photo_dir, regions="L2", store="pq", opq="yes", embedder=embedder,
                         progress=False)


def test_auto_pca_for_pq_depends_on_the_training_sample(photo_dir, embedder, monkeypatch,
                                                         tmp_path):
    from pypatch import ImageIndex
    from pypatch.index import image_index as ii
    common = dict(regions="L2", store="pq", pq_m=8, pq_nbits=4, mode="single_pass",
                  embedder=embedder, progress=False)
    # 84 training vectors < AUTO_PCA_MIN_TRAIN: PQ on the model's 1280-dim descriptors
    raw = ImageIndex.build(photo_dir, **common)
    assert raw.transform is None and raw.info()["stored_dim"] == 1280
    raw.save(tmp_path / "raw.ptch")
    assert ImageIndex.load(tmp_path / "raw.ptch")._meta["format"] == 1  # readable by old pypatch
    assert raw.info()["transform"] is None
    # the same rule with thresholds scaled to this small database: whitened PCA is fitted
    monkeypatch.setattr(ii, "AUTO_PCA_DIM", 16)
    monkeypatch.setattr(ii, "AUTO_PCA_MIN_TRAIN", 64)
    auto = ImageIndex.build(photo_dir, **common)
    assert auto.transform is not None and auto.transform.dim_out == 16
    # single-pass cells: half whitening (per-crop: AUTO_PCA_POWER, full)
    assert auto.transform.power == ii.AUTO_PCA_POWER_SINGLE_PASS and auto.info()["stored_dim"] == 16
    assert ImageIndex.build(photo_dir, **dict(common, mode="crop")).transform.power == ii.AUTO_PCA_POWER
    # 30 flat vectors (6 photos x 5 cells) are under AUTO_PCA_MIN_TRAIN: too few to whiten, so
    # "auto" keeps the raw space; so does a pq_m not dividing the PCA dim
    assert ImageIndex.build(photo_dir, regions="L1", store="flat", embedder=embedder,
                            progress=False).transform is None
    odd = ImageIndex.build(photo_dir, **dict(common, pq_m=5))
    assert odd.transform is None and odd.info()["stored_dim"] == 1280


def test_auto_pca_of_a_flat_store_widens_with_the_sample(photo_dir, embedder, monkeypatch,
                                                          tmp_path):
    from pypatch import ImageIndex
    from pypatch.index import image_index as ii

    # the rule with thresholds scaled to 6 photos: 16 axes from 16 vectors, 32 from 64
    monkeypatch.setattr(ii, "AUTO_PCA_DIM", 16)
    monkeypatch.setattr(ii, "AUTO_PCA_MIN_TRAIN", 16)
    monkeypatch.setattr(ii, "AUTO_FLAT_PCA_DIM", 32)
    monkeypatch.setattr(ii, "AUTO_FLAT_PCA_MIN_TRAIN", 64)
    common = dict(store="flat", embedder=embedder, progress=False)
    narrow = ImageIndex.build(photo_dir, regions="L1", **common)  # 6 x 5 = 30 vectors < 64
    assert narrow.transform.dim_out == 16 and narrow.info()["stored_dim"] == 16
    wide = ImageIndex.build(photo_dir, regions="L2", **common)  # 6 x 14 = 84 vectors >= 64
    assert wide.transform.dim_out == 32 and wide.info()["stored_dim"] == 32
    assert wide.info()["transform"]["dim"] == 32
    assert wide.info()["bytes_per_image"] == pytest.approx(14 * 32 * 4 + 8)
    # what is stored is the fitted transform of the model's descriptors
    raw = next(iter(embedder.embed_many([str(photo_dir / "rocket.png")], regions="L2"))).vectors
    np.testing.assert_allclose(wide.patch_vectors("rocket.png"), wide.transform.apply(raw),
                               atol=1e-5)
    for name in ("astronaut.png", "rocket.png", "coffee.png"):
        assert wide.search(str(photo_dir / name), k=1)[0].image == name
    wide.save(tmp_path / "wide.ptch")
    back = ImageIndex.load(tmp_path / "wide.ptch")
    assert back.info()["stored_dim"] == 32 and back.transform.dim_out == 32
    # per-crop flat stores widen, and so do residual codebooks (the PQ default here); product
    # codes and single-pass keep AUTO_PCA_DIM
    pq = ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=8, pq_nbits=4,
                          embedder=embedder, progress=False)
    assert pq.info()["store"]["codebooks"] == "residual" and pq.transform.dim_out == 32
    ppq = ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=8, pq_nbits=4,
                           pq_codebooks="product", embedder=embedder, progress=False)
    assert ppq.info()["store"]["codebooks"] == "product" and ppq.transform.dim_out == 16
    sp = ImageIndex.build(photo_dir, regions="L2", mode="single_pass", **common)
    assert sp.transform.dim_out == 16
    # an explicit pca_dim is kept whatever the sample
    assert ImageIndex.build(photo_dir, regions="L2", pca_dim=16, **common).transform.dim_out == 16


def _pq_error(y, m, nbits, seed=0):
    from pypatch.index.pq import ProductQuantizer

    pq = ProductQuantizer(y.shape[1], m, nbits=nbits).train(y, seed=seed)
    return float(np.mean(np.sum((pq.decode(pq.encode(y)) - y) ** 2, axis=1)))


def test_opq_rotation_is_orthogonal_and_lowers_pq_error():
    from pypatch.index.transform import fit_opq_rotation

    t = PCATransform.fit(_pixel_patches(), 16)  # plain PCA: energy piles up in the first dims
    y = t.apply(_pixel_patches())
    r = fit_opq_rotation(y, 4, nbits=4, niter=8)
    np.testing.assert_allclose(r.T @ r, np.eye(16), atol=1e-6)
    before, after = _pq_error(y, 4, 4), _pq_error(np.ascontiguousarray(y @ r, np.float32), 4, 4)
    assert after < 0.9 * before
    rt = t.rotated(r)  # folded into the matrix: same as rotating the output
    np.testing.assert_allclose(rt.apply(_pixel_patches(50)), t.apply(_pixel_patches(50)) @ r,
                               atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="rotation"):
        t.rotated(np.eye(3))


def test_opq_inside_imageindex_rotates_the_fitted_pca(photo_dir, embedder, tmp_path):
    from pypatch import ImageIndex

    index = ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=8, pq_nbits=4,
                             mode="single_pass", pca_dim=32, pca_power=-0.5, opq=True,
                             embedder=embedder, progress=False)
    assert index.info()["transform"]["opq"] is True
    x = np.concatenate([embedder.embed_patches(str(photo_dir / i), regions="L2",
                                               mode="single_pass")[0] for i in index.ids])
    pca = PCATransform.fit(x, 32, power=-0.5)
    got = index.transform.matrix.astype(np.float64)
    # R^T W: a rotation of the same projection (W^T R R^T W = W^T W), not the projection itself
    ref_gram = pca.matrix.T.astype(np.float64) @ pca.matrix
    np.testing.assert_allclose(got.T @ got, ref_gram, atol=1e-3 * np.abs(ref_gram).max())
    assert not np.allclose(got, pca.matrix, atol=1e-3)
    index.save(tmp_path / "opq.ptch")
    back = ImageIndex.load(tmp_path / "opq.ptch")
    back.set_embedder(embedder)
    for name in ("astronaut.png", "rocket.png"):
        assert back.search(str(photo_dir / name), k=1)[0].image == name
