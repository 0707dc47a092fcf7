"""Second-stage reranking: the scoring math against plain numpy loops, and the reranks of a real
ImageIndex (default model, real photos) against a reference recomputed from the Embedder's own
descriptors (not from the index's stored vectors)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402
from pypatch.index.rerank import expand_query, maxsim_scores, sum_of_maxima  # noqa: E402

from _photo_folder import CAT_BOX, save_cat_scene  # noqa: E402

OBJECT_BOX = CAT_BOX  # the cat pasted into the coffee scene (x1/y1 exclusive)


# ------------------------------------------------------------------------------- scoring math
def test_sum_of_maxima_equals_a_loop_reference():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(5, 16)), rng.normal(size=(30, 16))
    ref = 0.0
    for qi in q:  # sum over query patches of the best candidate patch
        ref += max(float(np.dot(qi, cj)) for cj in c)
    assert sum_of_maxima(q, c) == pytest.approx(ref, rel=1e-5)
    # one query patch: the first stage's max over patches
    assert sum_of_maxima(q[:1], c) == pytest.approx(max(np.dot(q[0], cj) for cj in c), rel=1e-5)


def test_maxsim_scores_are_mean_of_maxima_with_the_first_patch_argmax():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    cands = [rng.normal(size=(n, 8)).astype(np.float32) for n in (1, 5, 14, 30)]
    scores, best = maxsim_scores(q, cands)
    for i, c in enumerate(cands):
        sims = [[float(np.dot(a, b)) for b in c] for a in q]
        assert scores[i] == pytest.approx(np.mean([max(r) for r in sims]), rel=1e-5)
        assert best[i] == int(np.argmax(sims[0]))


def test_expand_query_is_alpha_weighted_and_normalised():
    out = expand_query([1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [0.5, -0.2], alpha=1.0)
    # negative scores weigh 0; 0.5 ** 1 * [0, 1] is added to the query
    np.testing.assert_allclose(out, np.array([1.0, 0.5]) / np.sqrt(1.25), rtol=1e-6)
    out3 = expand_query([1.0, 0.0], [[0.0, 1.0]], [0.5], alpha=3.0)
    np.testing.assert_allclose(out3, np.array([1.0, 0.125]) / np.hypot(1.0, 0.125), rtol=1e-6)


def test_scoring_math_rejects_bad_shapes():
    with pytest.raises(InvalidArgumentError, match="sum_of_maxima"):
        sum_of_maxima(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(InvalidArgumentError, match="sum_of_maxima"):
        sum_of_maxima(np.ones((0, 3)), np.ones((4, 3)))
    with pytest.raises(InvalidArgumentError, match="expand_query"):
        expand_query(np.ones(3), np.ones((2, 3)), [0.5])


# ------------------------------------------------------------------------------- real index
def _photos() -> dict:
    d = skimage_data
    return {"astronaut.png": d.astronaut(), "rocket.png": d.rocket(),
            "motorcycle.png": d.stereo_motorcycle()[0], "ihc.png": d.immunohistochemistry()}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank_photos")
    for name, arr in _photos().items():
        Image.fromarray(arr).save(root / name)
    return save_cat_scene(root)


# `embedder` and `flat_index` (flat L2 index of this module's photo_dir): tests/conftest.py


@pytest.fixture(scope="module")
def patches(flat_index, embedder, photo_dir):
    """The Embedder's own L2 descriptors of every database image (the reference's input)."""
    return {i: embedder.embed_patches(str(photo_dir / i), regions="L2")[0]
            for i in flat_index.ids}


def test_multipatch_rerank_equals_numpy_maxsim(flat_index, embedder, photo_dir, patches):
    query, box = str(photo_dir / "astronaut.png"), [100, 0, 300, 200]
    hits = flat_index.search(query, box=box, k=5, rerank="multipatch")
    qp, _ = embedder.embed_query_patches(query, box=box, regions="L1")
    assert qp.shape == (5, 1280)
    ref = sorted(((-float((qp @ p.T).max(axis=1).mean()), i) for i, p in patches.items()))
    assert [h.image for h in hits] == [i for _, i in ref]
    np.testing.assert_allclose([h.score for h in hits], [-s for s, _ in ref], atol=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    # the winning cell is the first stage's, unchanged
    first = {h.image: h for h in flat_index.search(query, box=box, k=5)}
    assert all(h.cell == h.box == first[h.image].cell and h.patch == first[h.image].patch
               for h in hits)


def test_multipatch_keeps_the_pasted_object_first(flat_index, photo_dir):
    cat = str(photo_dir / "cat.png")
    Image.fromarray(skimage_data.chelsea()).save(cat)
    hits = flat_index.search(cat, k=5, rerank="multipatch", rerank_k=3)
    assert hits[0].image == "scene.png"
    assert len(hits) == 5  # beyond rerank_k the first-stage order follows, scored below
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_qe_equals_a_new_search_with_the_expanded_query(flat_index, embedder, photo_dir, patches):
    query = str(photo_dir / "rocket.png")
    first = flat_index.search(query, k=5)
    q = embedder.embed_query(query)
    top = first[:2]
    vecs = [patches[h.image][h.patch] for h in top]
    expanded = q + sum(max(h.score, 0.0) ** 3 * v for h, v in zip(top, vecs))
    expanded /= np.linalg.norm(expanded)
    ref = []
    for i, p in patches.items():
        s = p @ expanded
        ref.append((-float(s.max()), i, int(s.argmax())))
    ref.sort()
    hits = flat_index.search(query, k=5, rerank="qe", qe_n=2)
    assert [h.image for h in hits] == [i for _, i, _ in ref]
    assert [h.patch for h in hits] == [p for _, _, p in ref]
    np.testing.assert_allclose([h.score for h in hits], [-s for s, _, _ in ref], atol=1e-5)


def test_pq_first_stage_score_is_the_reconstructed_inner_product(photo_dir, embedder):
    """rerank relies on it: q . reconstruct(image)[patch] reproduces the PQ search score."""
    from pypatch import ImageIndex

    pq = ImageIndex.build(photo_dir, regions="L2", store="pq", pq_m=32, pq_nbits=4,
                          embedder=embedder, progress=False)
    q = embedder.embed_query(str(photo_dir / "ihc.png"))
    for h in pq.search_vectors(q, k=5)[0]:
        rec = pq.patch_index.reconstruct(pq._row[h.image])
        assert h.score == pytest.approx(float(rec[h.patch] @ q), abs=1e-4)
        assert int(np.argmax(rec @ q)) == h.patch
    hits = pq.search(str(photo_dir / "ihc.png"), k=3, rerank="multipatch")
    assert hits[0].image == "ihc.png"


def test_bad_rerank_arguments_are_typed_errors(flat_index, photo_dir):
    query = str(photo_dir / "rocket.png")
    with pytest.raises(InvalidArgumentError, match="rerank"):
        flat_index.search(query, rerank="colbert")
    with pytest.raises(InvalidArgumentError, match="rerank_k"):
        flat_index.search(query, rerank="multipatch", rerank_k=0)
    with pytest.raises(InvalidTypeError, match="qe_n"):
        flat_index.search(query, rerank="qe", qe_n=True)
    with pytest.raises(InvalidArgumentError, match="rerankk"):
        flat_index.search(query, rerankk="qe")
    with pytest.raises(InvalidArgumentError, match="k"):
        flat_index.search(query, rerank="qe", k=0)


def test_eval_configuration_suffixes():
    from pypatch.evaluation.rankers import config_names, parse_config, split_second_stage

    assert split_second_stage("patchify-L3-pq32-mp-refine") == (
        "patchify-L3-pq32", {"rerank": "multipatch", "refine": "simmap", "refine_k": 100})
    assert split_second_stage("patchify-L3-flat-sp-qe") == ("patchify-L3-flat-sp", {"rerank": "qe"})
    assert split_second_stage("global") == ("global", {})
    assert parse_config("patchify-L3-pq32-global-sp-cells")["train_on"] == "global"
    assert {"patchify-L3-pq32-mp", "patchify-L3-pq32-refine"} <= set(config_names())
    with pytest.raises(InvalidArgumentError):
        parse_config("patchify-L3-pq32-refine-mp")  # the rerank comes before the boxes
