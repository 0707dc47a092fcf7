"""Training the store behind an :class:`~pypatch.ImageIndex`: PQ codebooks and pre-transform.

``build`` decides here whether a learned pre-transform (whitened PCA, plus an OPQ rotation for
PQ stores: :mod:`pypatch.index.transform`) is used, and checks the store settings. Once enough
descriptors are buffered, :func:`train_store` draws one seeded sample of them (all patches, or
whole-image cells only) and fits the transform, then the PQ codebooks, on it.
"""
from __future__ import annotations

import logging

import numpy as np

from pypatch._checks import as_int, choice
from pypatch.errors import InvalidArgumentError, TooFewVectorsError

log = logging.getLogger("pypatch")

CODEBOOKS = ("auto", "residual", "product")
# Lloyd iterations a codebook (a sub-space's, or a residual stage's). Residual codebooks with 10
# trained 2x faster but lost up to 1.3 mAP at 300 images (3 seeds: 1.6 below the flat store on
# average); benchmarks/README.md, "Residual codebooks".
TRAIN_ITERS = 25


def residual(store: dict) -> bool:
    """True for a PQ store with residual (additive) codebooks; stores recorded before them
    have no "codebooks" key and are product ones ("auto" is product until trained)."""
    return store["kind"] == "pq" and store.get("codebooks", "product") == "residual"


def transform_spec(pca_dim, pca_power, opq, *, store: str, pq_m, dim: int, train_size, seed,
                   auto_dim: int, mode: str = "crop", codebooks: str = "product"):
    """The ``meta["transform"]`` that ``build`` records before training (None: no transform).

    ``pca_dim="auto"`` means ``auto_dim`` axes when the model's ``dim`` is larger: for a PQ store
    when ``pq_m`` divides it (any ``pq_m`` with residual codebooks), and for every flat store
    (per-crop flat: +4.7 to +7.7 mAP at 100, 300 and 1,000 images on two seeds; single-pass
    cells need the centring: +9 to +12 mAP; benchmarks/README.md, "Quality defaults")."""
    if not (opq is True or opq is False or opq == "auto"):
        raise InvalidArgumentError(f"opq: expected True, False or 'auto', got {opq!r}")
    auto = isinstance(pca_dim, str) and pca_dim == "auto"
    if auto:
        pq_fits = (isinstance(pq_m, (int, np.integer)) and not isinstance(pq_m, bool)
                   and pq_m > 0 and auto_dim % pq_m == 0)
        use = dim > auto_dim and (pq_fits or codebooks == "residual" if store == "pq" else True)
        pca_dim = auto_dim if use else None
    if pca_dim is None:
        return None
    from pypatch.index.transform import KIND, check_dim, check_power

    check_dim(pca_dim, dim)
    check_power(pca_power)
    check_train_size(train_size, 2)
    return {"kind": KIND, "dim": int(pca_dim), "power": float(pca_power),
            "train_size": int(train_size), "seed": int(seed), "auto": auto,
            # a rotation changes nothing for full-dimension codebooks
            "opq": opq is not False and store == "pq" and codebooks != "residual"}


def check_pq(dim, m, nbits, train_size, codebooks: str = "product") -> None:
    choice(codebooks, "pq_codebooks", CODEBOOKS)
    if codebooks == "residual":
        from pypatch import _core

        as_int(m, "pq_m", 1, _core.ResidualQuantizer.max_m)
        if m * dim > _core.ResidualQuantizer.max_codeword_floats:
            raise InvalidArgumentError(f"pq_m * the stored dimension must be <= 2**26 with "
                                       f"residual codebooks; got pq_m={m}, dimension {dim}")
    elif dim % as_int(m, "pq_m", 1):
        raise InvalidArgumentError(
            f"pq_m must divide the stored dimension {dim} (the model's, or pca_dim); got {m!r}")
    choice(nbits, "pq_nbits", (4, 8))
    check_train_size(train_size, 1 << nbits)


def check_train_size(train_size, minimum: int) -> None:
    as_int(train_size, "train_size", minimum)


def new_patch_index(dim: int, store: dict):
    """An empty native index for the store settings ``meta["store"]``."""
    from pypatch.index.patch_index import PatchIndex

    if store["kind"] == "pq":
        from pypatch.index.pq import ProductQuantizer, ResidualQuantizer

        kind = ResidualQuantizer if residual(store) else ProductQuantizer
        index = PatchIndex(dim, pq=kind(dim, store["m"], nbits=store["nbits"]),
                           nlist=store.get("nlist"))
        if store.get("nlist"):
            index.nprobe = store["nprobe"]
        return index
    dtype = "float16" if store["kind"] == "flat16" else "float32"
    return PatchIndex(dim, pq=None, flat_dtype=dtype)


def train_settings(meta: dict) -> tuple:
    """(train_on, train_size, seed) of the PQ codebooks, else of the transform alone."""
    store = meta["store"]
    if store["kind"] == "pq":
        return store["train_on"], store["train_size"], store["seed"]
    spec = meta["transform"]
    return "patches", spec["train_size"], spec["seed"]


def training_rows(meta: dict, vectors: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The descriptors of one image that training may sample: all, or level 0 (``"global"``)."""
    if train_settings(meta)[0] == "global":
        return vectors[levels == 0]
    return vectors


def train_store(meta: dict, patch_index, parts: list, *, min_auto_train: int,
                wide_auto: tuple = (), num_threads=None):
    """Fit the pre-transform (if any), then the PQ codebooks (if any), on one sample of ``parts``
    (the :func:`training_rows` of the buffered images). Records what was fitted in ``meta``.

    An ``"auto"`` transform whose sample is under ``min_auto_train`` vectors (too few to whiten
    by) is dropped and PQ runs on the model's descriptors in a new native index (nothing has
    been added yet). ``wide_auto`` = ``(dim, min_train)``: an ``"auto"`` transform of a per-crop
    flat store keeps ``dim`` axes instead when the model has more and the sample holds
    ``min_train`` vectors (a new native index of that width, likewise); so does a PQ store with
    residual codebooks, which follow the flat stores. ``codebooks="auto"`` becomes "residual"
    (without OPQ) wherever the automatic PCA of a per-crop store is kept, "product" otherwise
    (benchmarks/README.md, "Residual codebooks"). Returns
    ``(patch_index, transform)``: the index to add to, the fitted
    :class:`~pypatch.index.transform.PCATransform` or None."""
    store = meta["store"]
    train_on, train_size, seed = train_settings(meta)
    x = np.concatenate(parts) if parts else np.zeros((0, meta["dim"]), np.float32)
    spec = meta.get("transform")
    if spec is not None and spec.get("auto") and min(len(x), train_size) < min_auto_train:
        # before the count check: a flat store with an automatic PCA needs no training then
        log.info("pca_dim='auto': %d training vectors < %d, no PCA", min(len(x), train_size),
                 min_auto_train)
        meta["transform"] = spec = None
        patch_index = new_patch_index(meta["dim"], store)
    auto_crop = bool(spec is not None and spec.get("auto") and meta.get("mode") == "crop")
    if store["kind"] == "pq" and store.get("codebooks") == "auto":
        store["codebooks"] = "residual" if auto_crop else "product"
        if auto_crop:
            spec["opq"] = False  # a rotation changes nothing for full-dimension codebooks
            patch_index = new_patch_index(spec["dim"], store)
    wide = (auto_crop and wide_auto and meta["dim"] > wide_auto[0] > spec["dim"]
            and min(len(x), train_size) >= wide_auto[1])
    if wide and (store["kind"] != "pq" or residual(store)):
        spec["dim"] = int(wide_auto[0])
        patch_index = new_patch_index(spec["dim"], store)
    if spec is None and store["kind"] != "pq":
        return patch_index, None
    need = (1 << store["nbits"]) if store["kind"] == "pq" else 2
    if len(x) < need:
        if store["kind"] == "pq":
            raise TooFewVectorsError(
                f"store='pq' with pq_nbits={store['nbits']} needs at least {need} training "
                f"vectors to learn its {need} centroids (train_on={train_on!r}); the source gave "
                f"{len(x)}: add images, use more regions, pq_nbits=4, or store='flat' "
                f"(with pca_dim=None)", what="pq", needed=need, got=len(x))
        raise TooFewVectorsError(
            f"pca_dim={meta['transform']['dim']} needs at least {need} training vectors to learn "
            f"the PCA; the source gave {len(x)}: add images or use pca_dim=None",
            what="pca", needed=need, got=len(x))
    nlist = store.get("nlist") or 0
    if len(x) < nlist:
        raise TooFewVectorsError(
            f"nlist={nlist} needs at least {nlist} training vectors to learn its coarse "
            f"centroids; the source gave {len(x)}: add images, raise train_size or lower nlist",
            what="ivf", needed=nlist, got=len(x))
    if len(x) > train_size:
        rng = np.random.default_rng(seed)
        x = x[np.sort(rng.choice(len(x), train_size, replace=False))]
    transform = None
    if spec is not None:
        transform = _fit_transform(x, spec, store, seed, num_threads)
        spec["fitted"] = transform.to_dict()
        spec["trained_on_vectors"] = int(len(x))
        x = transform.apply(x)
    if store["kind"] == "pq":
        patch_index.train(np.ascontiguousarray(x), iters=TRAIN_ITERS, seed=seed,
                          num_threads=num_threads)
        store["trained_on_vectors"] = int(len(x))
    return patch_index, transform


def _fit_transform(x, spec: dict, store: dict, seed, num_threads):
    """Whitened PCA of the sample, rotated by OPQ for PQ stores when the spec asks for it."""
    from pypatch.index.transform import PCATransform

    transform = PCATransform.fit(x, spec["dim"], spec["power"])
    if spec.get("opq") and store["kind"] == "pq":
        from pypatch.index.transform import fit_opq_rotation

        rotation = fit_opq_rotation(transform.apply(x), store["m"], nbits=store["nbits"],
                                    seed=seed, num_threads=num_threads)
        transform = transform.rotated(rotation)
    return transform
