"""ImageIndex.add with ids already present (a duplicate key raises, as in faiss/usearch, or
replaces with replace=True) and ImageIndex.build on a collection too small for PQ.

References: the native index's own patch count and search scores of the images themselves
(an image is its own best match, score 1 at level 0)."""
from __future__ import annotations

import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from pypatch import ImageIndex  # noqa: E402
from pypatch.errors import InvalidArgumentError, TooFewVectorsError  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("add_photos")
    for name, arr in {"rocket.png": skimage_data.rocket(), "camera.png": skimage_data.camera(),
                      "coffee.png": skimage_data.coffee()}.items():
        Image.fromarray(arr).save(root / name)
    return root


@pytest.fixture()
def index(photos, embedder):
    return ImageIndex.build([("a", str(photos / "rocket.png")), ("b", str(photos / "camera.png"))],
                            regions="L1", store="flat", embedder=embedder, progress=False)


def test_add_an_id_already_present_raises_before_embedding(index, photos):
    patches = index.patch_index.num_patches
    with pytest.raises(InvalidArgumentError, match="'a'.*replace=True"):
        index.add([("c", str(photos / "coffee.png")), ("a", str(photos / "coffee.png"))])
    # nothing was added, not even the new id that came first
    assert index.ids == ["a", "b"] and index.patch_index.num_patches == patches
    with pytest.raises(InvalidArgumentError, match="'c' is given twice"):
        index.add([("c", str(photos / "coffee.png")), ("c", str(photos / "rocket.png"))])
    assert index.ids == ["a", "b"]


def test_add_with_replace_swaps_the_image_behind_an_id(index, photos, tmp_path):
    coffee = str(photos / "coffee.png")
    assert index.search(coffee, k=1)[0].score < 0.99  # coffee is not indexed yet
    assert index.add([("a", coffee)], replace=True) == ["a"]
    assert index.ids == ["b", "a"] and len(index) == 2  # the new image comes last
    hit = index.search(coffee, k=1)[0]
    assert (hit.image, hit.path, hit.level) == ("a", coffee, 0)
    assert hit.score == pytest.approx(1.0, abs=1e-4)
    # the rocket behind the old "a" no longer answers
    rocket_hits = index.search(str(photos / "rocket.png"), k=2)
    assert all(h.score < 0.99 for h in rocket_hits)
    index.save(tmp_path / "replaced.ptch")
    loaded = ImageIndex.load(tmp_path / "replaced.ptch")
    assert loaded.ids == ["b", "a"] and loaded.patch_index.num_patches == 2 * 5
    with pytest.raises(TypeError, match="replace"):
        index.add([("a", coffee)], replace="yes")


def test_save_into_a_missing_folder_names_the_folder(index, tmp_path):
    with pytest.raises(FileNotFoundError, match="folder .*nodir.* does not exist"):
        index.save(tmp_path / "nodir" / "x.ptch")


def test_build_too_small_for_pq_raises_a_typed_error_naming_python_arguments(photos, embedder):
    # 2 images x 5 L1 cells = 10 vectors < the 256 centroids of 8-bit PQ
    with pytest.raises(TooFewVectorsError) as exc:
        ImageIndex.build([str(photos / "rocket.png"), str(photos / "camera.png")], regions="L1",
                         store="pq", pq_m=16, embedder=embedder, progress=False)
    assert (exc.value.what, exc.value.needed, exc.value.got) == ("pq", 256, 10)
    assert "store='pq'" in str(exc.value) and "pq_nbits=4" in str(exc.value)
    assert isinstance(exc.value, InvalidArgumentError)


def test_flat_store_of_a_single_pass_index_needs_no_training(photos, embedder):
    # the automatic PCA of single-pass flat stores is dropped on tiny samples: 1 vector is fine
    index = ImageIndex.build([str(photos / "rocket.png")], regions="L0", store="flat",
                             mode="single_pass", embedder=embedder, progress=False)
    assert len(index) == 1 and index.transform is None
    assert index.search(str(photos / "rocket.png"), k=1)[0].image == str(photos / "rocket.png")
