"""The peers pypatch's fused scan is measured against, written as a competent user would.

Every peer answers the same question as ``pypatch.PatchIndex.search``: for each query, the
top-k images ranked by the MAX over their patches of the ADC inner-product score, with the
winning patch's ordinal inside its image. Ties: lower patch ordinal wins inside an image,
lower image index wins in the ranking. Images without patches are never returned; missing
hits are padded with -inf / -1.

* ``reference_search``  plain numpy, the oracle (also used to check the peers in tests);
* ``FaissGroupBy``      faiss ``IndexPQ`` over-fetches k' patches, numpy groups them by image;
* ``numba_search``      a numba-JIT fused scan: LUT gather, per-image max/argmax, top-k
                        insertion, serial or ``prange`` (chunks of images for one query,
                        queries for a batch).

Image layout: CSR ``offsets`` (int64, n_images + 1); image i owns patches
``offsets[i]:offsets[i+1]``. ``constant_offsets(n_images, P)`` builds the common case.
"""
from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------- helpers


def constant_offsets(n_images: int, patches_per_image: int) -> np.ndarray:
    return np.arange(n_images + 1, dtype=np.int64) * patches_per_image


def luts_numpy(centroids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Inner-product lookup tables (nq, m, ksub): lut[q, j, c] = <q_j, C_j[c]>."""
    m, ksub, dsub = centroids.shape
    q = np.ascontiguousarray(queries, dtype=np.float32).reshape(len(queries), m, dsub)
    return np.einsum("qjd,jcd->qjc", q, centroids, optimize=True).astype(np.float32)


def adc_scores_numpy(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """ADC score of every patch for one (m, ksub) table: sum_j lut[j, codes[:, j]]."""
    m = lut.shape[0]
    return lut[np.arange(m), codes].sum(axis=1, dtype=np.float32)


def topk_images_from_scores(scores: np.ndarray, offsets: np.ndarray, k: int):
    """Per-image max/argmax of patch ``scores`` then top-k images; the numpy oracle."""
    n_images = len(offsets) - 1
    counts = np.diff(offsets)
    img_of_patch = np.repeat(np.arange(n_images), counts)
    # sort patches by (image, score desc, patch asc): the first patch of each image wins
    order = np.lexsort((np.arange(scores.size), -scores, img_of_patch))
    first = np.ones(order.size, dtype=bool)
    first[1:] = img_of_patch[order[1:]] != img_of_patch[order[:-1]]
    win = order[first]
    imgs, best = img_of_patch[win], scores[win]
    rank = np.lexsort((imgs, -best))[:k]
    out_s = np.full(k, -np.inf, dtype=np.float32)
    out_i = np.full(k, -1, dtype=np.int64)
    out_p = np.full(k, -1, dtype=np.int64)
    out_s[:rank.size] = best[rank]
    out_i[:rank.size] = imgs[rank]
    out_p[:rank.size] = win[rank] - offsets[imgs[rank]]
    return out_s, out_i, out_p


def reference_search(luts: np.ndarray, codes: np.ndarray, offsets: np.ndarray, k: int):
    """Oracle: full ADC score array per query, then ``topk_images_from_scores``."""
    res = [topk_images_from_scores(adc_scores_numpy(lut, codes), offsets, k) for lut in luts]
    return tuple(np.stack(a) for a in zip(*res))


# ----------------------------------------------------------------------------- faiss peer


def group_by_image(D: np.ndarray, I: np.ndarray, offsets: np.ndarray, k: int):
    """Turn faiss's patch-level (D, I) of shape (nq, k') into image-level top-k, vectorised.

    What a faiss user writes on top of an over-fetched search: map patch ids to images, keep
    each image's best patch, rank images. Exact when k' >= k * max_patches_per_image.
    """
    nq, kp = I.shape
    row = np.repeat(np.arange(nq), kp)
    d, i = D.ravel(), I.ravel()
    valid = i >= 0
    row, d, i = row[valid], d[valid], i[valid]
    img = np.searchsorted(offsets, i, side="right") - 1
    patch = i - offsets[img]
    order = np.lexsort((patch, -d, img, row))           # best patch of each (row, image) first
    row, d, img, patch = row[order], d[order], img[order], patch[order]
    first = np.ones(row.size, dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (img[1:] != img[:-1])
    row, d, img, patch = row[first], d[first], img[first], patch[first]
    order = np.lexsort((img, -d, row))                   # rank images inside each query
    row, d, img, patch = row[order], d[order], img[order], patch[order]
    starts = np.searchsorted(row, np.arange(nq))
    pos = np.arange(row.size) - starts[row]
    keep = pos < k
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    out_p = np.full((nq, k), -1, dtype=np.int64)
    out_s[row[keep], pos[keep]] = d[keep]
    out_i[row[keep], pos[keep]] = img[keep]
    out_p[row[keep], pos[keep]] = patch[keep]
    return out_s, out_i, out_p


class FaissGroupBy:
    """faiss ``IndexPQ`` (inner product) over patches + numpy group-by-image max.

    ``centroids`` (m, 256, dsub) loads an existing codebook (same codes as the other engines:
    only the scan differs); otherwise call ``train`` with a float sample.
    """

    def __init__(self, dim: int, m: int, nbits: int = 8, centroids: np.ndarray | None = None):
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexPQ(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
        self.offsets = None
        self.max_patches = 0
        if centroids is not None:
            c = np.ascontiguousarray(centroids, dtype=np.float32)
            if c.shape != (m, 1 << nbits, dim // m):
                raise ValueError(f"centroids: expected shape {(m, 1 << nbits, dim // m)}, got {c.shape}")
            faiss.copy_array_to_vector(c.ravel(), self.index.pq.centroids)
            self.index.is_trained = True

    def train(self, sample: np.ndarray, iters: int = 25, seed: int = 0) -> None:
        self.index.pq.cp.niter = iters
        self.index.pq.cp.seed = seed
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    @property
    def centroids(self) -> np.ndarray:
        pq = self.index.pq
        return self.faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.index.pq.compute_codes(np.ascontiguousarray(x, dtype=np.float32))

    def add_codes(self, codes: np.ndarray, offsets: np.ndarray) -> None:
        if self.index.ntotal:
            raise ValueError("FaissGroupBy holds one database; build a new one")
        self.index.add_sa_codes(np.ascontiguousarray(codes, dtype=np.uint8))
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.max_patches = int(np.diff(self.offsets).max(initial=0))

    def scan(self, queries: np.ndarray, kprime: int):
        """faiss's own patch-level search (LUT build + full scan + heap of k')."""
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), kprime)

    def search(self, queries: np.ndarray, k: int, kprime: int | None = None):
        """Image-level top-k. Default k' = k * max patches per image, the smallest exact one."""
        kprime = kprime or k * max(self.max_patches, 1)
        D, I = self.scan(queries, min(kprime, self.index.ntotal))
        return group_by_image(D, I, self.offsets, k)

    def bytes_per_image(self) -> float:
        n_images = len(self.offsets) - 1
        return (self.index.ntotal * self.index.code_size + self.offsets.nbytes) / n_images


class FaissFastScanGroupBy(FaissGroupBy):
    """faiss ``IndexPQFastScan`` (4-bit, inner product, blocks of 32) over patches + the same
    numpy group-by. Built from an ``IndexPQ`` holding the given (m, 16, dsub) centroids and
    the (n, m) codes, which faiss repacks into its fast-scan layout: same codes as ours."""

    def __init__(self, dim: int, m: int, centroids: np.ndarray):
        super().__init__(dim, m, nbits=4, centroids=centroids)
        self.pq_index = self.index  # exact 4-bit ADC (faiss's generic scan), kept for checks

    def add_codes(self, codes: np.ndarray, offsets: np.ndarray) -> None:
        c = np.ascontiguousarray(codes, dtype=np.uint8)
        if c.shape[1] % 2:
            c = np.concatenate([c, np.zeros((len(c), 1), np.uint8)], axis=1)
        packed = np.ascontiguousarray(c[:, 0::2] | (c[:, 1::2] << 4))  # faiss: low nibble first
        self.pq_index.add_sa_codes(packed)
        self.index = self.faiss.IndexPQFastScan(self.pq_index, 32)
        self.pq_index.reset()  # only the fast-scan copy is searched
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.max_patches = int(np.diff(self.offsets).max(initial=0))

    def bytes_per_image(self) -> float:
        n_images = len(self.offsets) - 1
        return (self.index.ntotal * self.index.code_size + self.offsets.nbytes) / n_images


# ----------------------------------------------------------------------------- numba peer
# Module-level kernels: numba's on-disk cache (cache=True) only hits for top-level functions,
# so a fresh process loads them instead of recompiling (keeps tests/test_bench_peers.py fast).
try:
    import numba
except ImportError:  # the faiss peer and the numpy oracle still work without numba
    numba = None

if numba is not None:
    @numba.njit(cache=True, nogil=True, inline="always")
    def _insert(top_s, top_i, top_p, s, img, patch):
        # keep (score desc, image asc): an equal score never displaces an earlier image
        k = top_s.size
        if not s > top_s[k - 1]:
            return
        j = k - 1
        while j > 0 and s > top_s[j - 1]:
            top_s[j] = top_s[j - 1]
            top_i[j] = top_i[j - 1]
            top_p[j] = top_p[j - 1]
            j -= 1
        top_s[j] = s
        top_i[j] = img
        top_p[j] = patch

    @numba.njit(cache=True, nogil=True)
    def _scan_range(lut, codes, offsets, i0, i1, top_s, top_i, top_p):
        m = codes.shape[1]
        for img in range(i0, i1):
            best = np.float32(-np.inf)
            arg = -1
            for p in range(offsets[img], offsets[img + 1]):
                s = np.float32(0.0)
                for j in range(m):
                    s += lut[j, codes[p, j]]
                if s > best:
                    best = s
                    arg = p - offsets[img]
            if arg >= 0:
                _insert(top_s, top_i, top_p, best, img, arg)

    @numba.njit(cache=True, nogil=True)
    def _merge(part_s, part_i, part_p, top_s, top_i, top_p):
        # parts come in ascending image order, each sorted: sequential insertion keeps ties right
        for c in range(part_s.shape[0]):
            for j in range(part_s.shape[1]):
                if part_i[c, j] >= 0:
                    _insert(top_s, top_i, top_p, part_s[c, j], part_i[c, j], part_p[c, j])

    @numba.njit(cache=True, nogil=True)
    def search_serial(luts, codes, offsets, top_s, top_i, top_p):
        n_images = offsets.size - 1
        for q in range(luts.shape[0]):
            _scan_range(luts[q], codes, offsets, 0, n_images, top_s[q], top_i[q], top_p[q])

    @numba.njit(cache=True, nogil=True, parallel=True)
    def search_chunks(lut, codes, offsets, nchunks, top_s, top_i, top_p):
        # one query, images split into contiguous chunks scanned in parallel, then merged
        n_images = offsets.size - 1
        k = top_s.size
        step = (n_images + nchunks - 1) // nchunks
        part_s = np.full((nchunks, k), -np.inf, dtype=np.float32)
        part_i = np.full((nchunks, k), -1, dtype=np.int64)
        part_p = np.full((nchunks, k), -1, dtype=np.int64)
        for c in numba.prange(nchunks):
            i0 = c * step
            i1 = min(n_images, i0 + step)
            _scan_range(lut, codes, offsets, i0, i1, part_s[c], part_i[c], part_p[c])
        _merge(part_s, part_i, part_p, top_s, top_i, top_p)

    @numba.njit(cache=True, nogil=True, parallel=True)
    def search_queries(luts, codes, offsets, top_s, top_i, top_p):
        # a batch: queries in parallel, each a serial scan
        n_images = offsets.size - 1
        for q in numba.prange(luts.shape[0]):
            _scan_range(luts[q], codes, offsets, 0, n_images, top_s[q], top_i[q], top_p[q])


def _numba_kernels():
    if numba is None:
        raise ImportError("the numba peer needs numba (pip install numba)")
    return search_serial, search_chunks, search_queries


def numba_search(luts: np.ndarray, codes: np.ndarray, offsets: np.ndarray, k: int,
                 threads: int = 1):
    """Fused numba scan over (nq, m, 256) float32 tables; returns (scores, images, patches)."""
    serial, chunks, queries = _numba_kernels()
    luts = np.ascontiguousarray(luts, dtype=np.float32)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    nq = luts.shape[0]
    top_s = np.full((nq, k), -np.inf, dtype=np.float32)
    top_i = np.full((nq, k), -1, dtype=np.int64)
    top_p = np.full((nq, k), -1, dtype=np.int64)
    if threads <= 1:
        serial(luts, codes, offsets, top_s, top_i, top_p)
        return top_s, top_i, top_p
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        if nq == 1:
            # several chunks per thread so a slow core does not hold up the merge
            chunks(luts[0], codes, offsets, 4 * threads, top_s[0], top_i[0], top_p[0])
        else:
            queries(luts, codes, offsets, top_s, top_i, top_p)
    finally:
        numba.set_num_threads(old)
    return top_s, top_i, top_p


class NumbaScan:
    """The numba peer as an engine: numpy LUTs (counted in its time) + ``numba_search``."""

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, offsets: np.ndarray):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def search(self, queries: np.ndarray, k: int, threads: int = 1):
        luts = luts_numpy(self.centroids, np.atleast_2d(queries))
        return numba_search(luts, self.codes, self.offsets, k, threads)

    def bytes_per_image(self) -> float:
        return (self.codes.nbytes + self.offsets.nbytes) / (len(self.offsets) - 1)
