"""Bad input to the native core gives a typed error naming the argument, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

import pypatch
from pypatch.errors import InvalidArgumentError, InvalidTypeError, NotTrainedError


@pytest.fixture()
def flat():
    ix = pypatch.PatchIndex(8)
    ix.add(np.ones((6, 8), np.float32), patches_per_image=3)
    return ix


@pytest.mark.parametrize("args,exc", [
    ((0, 1), InvalidArgumentError), ((8, 3), InvalidArgumentError), ((8, 16), InvalidArgumentError),
    ((8, 2, 6), InvalidArgumentError), ((8.0, 2), InvalidTypeError), ((8, True), InvalidTypeError),
])
def test_bad_quantizer_settings(args, exc):
    with pytest.raises(exc):
        pypatch.ProductQuantizer(*args)


def test_bad_training_input():
    pq = pypatch.ProductQuantizer(8, 2)
    with pytest.raises(InvalidTypeError, match="x must have dtype float32"):
        pq.train(np.zeros((300, 8)))
    with pytest.raises(InvalidArgumentError, match="columns"):
        pq.train(np.zeros((300, 9), np.float32))
    with pytest.raises(InvalidArgumentError, match="at least"):
        pq.train(np.zeros((10, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        pq.train(np.full((300, 8), np.nan, np.float32))
    with pytest.raises(InvalidTypeError):
        pq.train([[0.0] * 8] * 300)
    with pytest.raises(InvalidArgumentError, match="shape"):
        pypatch.ProductQuantizer.from_centroids(np.zeros((2, 100, 4), np.float32))


def test_bad_search_arguments(flat):
    q = np.ones((2, 8), np.float32)
    with pytest.raises(InvalidArgumentError, match="k must be >= 1"):
        flat.search(q, k=0)
    with pytest.raises(InvalidTypeError, match="k must be an int"):
        flat.search(q, k=2.5)
    with pytest.raises(InvalidTypeError, match="queries must have dtype float32"):
        flat.search(q.astype(np.float64))
    with pytest.raises(InvalidArgumentError, match="8 columns"):
        flat.search(np.ones((2, 7), np.float32))
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        flat.search(np.ones((8, 2), np.float32).T)
    with pytest.raises(InvalidArgumentError, match="queries must be"):
        flat.search(np.ones((1, 2, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="num_threads"):
        flat.search(q, num_threads=0)


def test_bad_add_arguments(flat):
    v = np.ones((6, 8), np.float32)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        flat.add(v)
    with pytest.raises(InvalidArgumentError, match="does not divide"):
        flat.add(v, patches_per_image=4)
    with pytest.raises(InvalidArgumentError, match="image_offsets"):
        flat.add(v, image_offsets=[0, 4, 3, 6])
    with pytest.raises(InvalidArgumentError, match="add up"):
        flat.add(v, patches_per_image=[1, 2])
    with pytest.raises(InvalidArgumentError, match="PQ index"):
        flat.add_codes(np.zeros((3, 8), np.uint8), patches_per_image=3)
    assert len(flat) == 2  # nothing was added by the failed calls


def test_untrained_pq_index():
    ix = pypatch.PatchIndex(8, pypatch.ProductQuantizer(8, 2))
    with pytest.raises(NotTrainedError):
        ix.search(np.ones(8, np.float32))
    with pytest.raises(NotTrainedError):
        ix.add(np.ones((3, 8), np.float32), patches_per_image=3)
    with pytest.raises(InvalidArgumentError, match="pq.dim"):
        pypatch.PatchIndex(16, pypatch.ProductQuantizer(8, 2))
    with pytest.raises(InvalidTypeError):
        pypatch.PatchIndex(8, pq="pq")


def test_add_codes_rejects_codes_beyond_nbits():
    c = np.zeros((2, 16, 2), np.float32)
    ix = pypatch.PatchIndex(4, pypatch.ProductQuantizer.from_centroids(c))
    with pytest.raises(InvalidArgumentError, match="2\\*\\*nbits"):
        ix.add_codes(np.full((1, 2), 16, np.uint8), patches_per_image=1)


def test_bad_edits_and_metadata(flat):
    with pytest.raises(InvalidArgumentError, match="out of range"):
        flat.remove([5])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        flat.reconstruct(-1)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        flat.metadata = {"x": object()}
    flat.metadata["bad"] = float("nan")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        flat.to_bytes()


def test_simd_level_errors():
    with pytest.raises(InvalidArgumentError):
        pypatch.set_simd_level("sse9")
    with pytest.raises(InvalidTypeError):
        pypatch.set_simd_level(3)


def test_float16_store_rejects_values_it_cannot_hold():
    ix = pypatch.PatchIndex(4, flat_dtype="float16")
    with pytest.raises(InvalidArgumentError, match="float16"):
        ix.add(np.full((2, 4), 1e6, np.float32), patches_per_image=2)
