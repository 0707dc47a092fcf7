"""The saved state of an :class:`~pypatch.ImageIndex`: its JSON metadata, written and checked.

An image index is one native index file whose JSON ``metadata`` holds, under :data:`META_KEY`,
what maps the core's image numbers back to the user's world (ids, paths, sizes, the grid, the
model identity, the store settings and the fitted pre-transform). This module builds that dict,
turns it back into objects, and refuses files whose metadata does not fit the native index.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from pypatch.errors import IndexFormatError, PypatchError
from pypatch.extract.grid import MAX_PYRAMID_LEVEL

META_KEY = "pypatch.image_index"  # the metadata entry that marks an image-level index
# 4: a re-rank store saved beside the file (``rerank``: kind and the token pairing the files);
#    a reader without it would search without the store and, saving edits, leave it stale;
# 3: a learned pre-transform whose mean and matrix live in the native XFRM section (META keeps
#    dims, power, eigenvalues); 2: the whole transform as base64 in META (still read);
# 1: no transform (files without one are still written as 1, readable by any pypatch).
META_FORMAT = 4
_REQUIRED = ("format", "ids", "paths", "sizes", "regions", "mode", "store", "model", "dim")


def new_meta(*, grid, regions_spec: str, mode: str, store: dict, model: dict, dim: int,
             transform) -> dict:
    """The metadata of an empty index (images are appended as they are added)."""
    return {
        "format": META_FORMAT, "ids": [], "paths": [], "sizes": [], "removed": [],
        "regions": {"spec": regions_spec, "grid": grid_to_dict(grid)},
        "mode": mode, "store": store, "model": model, "dim": dim,
        "transform": transform,
    }


def saved_meta(meta: dict, ids: list, paths: list, sizes: list, version: str,
               transform=None) -> dict:
    """The metadata written by ``save`` (after compaction: nothing removed). ``transform``: the
    fitted PCATransform, whose mean and matrix the caller puts in the native index (XFRM)."""
    out = dict(meta)
    if out.get("transform") and transform is not None:
        out["transform"] = dict(out["transform"], fitted=transform.to_dict(native=True))
    out.update(ids=ids, paths=paths, sizes=[list(s) for s in sizes], removed=[],
               pypatch_version=version,
               # a pypatch that cannot read the transform must refuse the file, not search
               # with untransformed queries: it rejects formats above its own
               format=4 if out.get("rerank") else 3 if out.get("transform") else 1)
    return out


def read_meta(patch_index, path) -> dict:
    """The image metadata of a loaded native index, checked against it (IndexFormatError)."""
    metadata = getattr(patch_index, "metadata", None) or {}
    meta = metadata.get(META_KEY) if isinstance(metadata, dict) else None
    if not isinstance(meta, dict):
        raise IndexFormatError(
            f"{path!r} is a vector-level PatchIndex without image metadata; open it with "
            f"pypatch.PatchIndex.load")
    validate_meta(meta, patch_index, path)
    return meta


def native_transform(patch_index):
    """``(mean, matrix)`` stored in the native index (XFRM), or None."""
    return getattr(patch_index, "transform", None)


def grid_to_dict(grid) -> dict:
    return grid.to_dict()


def grid_from_dict(d: dict):
    from pypatch.extract.grid import PatchGrid

    return PatchGrid.from_dict(d)


def transform_from_meta(spec, native=None):
    """The fitted transform recorded in ``meta["transform"]`` (None before fitting / unused);
    ``native``: the native index's ``(mean, matrix)`` for records that keep them there."""
    if not spec or "fitted" not in spec:
        return None
    from pypatch.index.transform import PCATransform

    return PCATransform.from_dict(spec["fitted"], where="image metadata transform", native=native)


def transform_summary(spec):
    """``meta["transform"]`` without its matrix (for ``info()``)."""
    if not spec:
        return None
    return {k: v for k, v in spec.items() if k != "fitted"}


# ---------------------------------------------------------------------- the schema, checked
# Every key ImageIndex reads from META, checked on load against the native index it describes,
# so that a CRC-valid but inconsistent file is refused with one line instead of failing later
# (IndexError in a search, KeyError in info). JSON gives plain Python values: ints are `int`
# (never `bool`), numbers finite.
_MAX_DIM = 1 << 20  # the native index's own bound on dim
_MAX_SIDE = (1 << 31) - 1  # grid boxes are int32
_GRID_KEYS = {"pyramid": ("levels",), "rmac": ("levels", "overlap"),
              "sliding": ("levels", "window", "stride")}


class _Check:
    """Raises IndexFormatError naming the file and the META key."""

    def __init__(self, path):
        self.path = path

    def fail(self, key: str, what: str):
        raise IndexFormatError(f"{self.path!r}: image metadata {key}: {what}")

    def obj(self, d: dict, key: str, name: str, *, optional: bool = False):
        if key not in d:
            if optional:
                return None
            self.fail(name, "missing")
        if not isinstance(d[key], dict):
            self.fail(name, f"expected an object, got {_short(d[key])}")
        return d[key]

    def integer(self, d: dict, key: str, name: str, lo: int, hi=None, *, optional: bool = False):
        if key not in d:
            if optional:
                return None
            self.fail(name, "missing")
        v = d[key]
        if type(v) is not int or v < lo or (hi is not None and v > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(name, f"expected an integer in {span}, got {_short(v)}")
        return v

    def number(self, d: dict, key: str, name: str, lo: float, hi: float, *,
               lo_open: bool = False, hi_open: bool = False):
        if key not in d:
            self.fail(name, "missing")
        v = d[key]
        ok = type(v) in (int, float) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            self.fail(name, f"expected a number in {span}, got {_short(v)}")
        return v

    def string(self, d: dict, key: str, name: str, *, choices=None, none: bool = False,
            optional: bool = False):
        if key not in d:
            if optional:
                return None
            self.fail(name, "missing")
        v = d[key]
        if v is None and none:
            return None
        if not isinstance(v, str) or (choices is not None and v not in choices):
            want = f"one of {', '.join(choices)}" if choices is not None else "a string"
            self.fail(name, f"expected {want}{' or null' if none else ''}, got {_short(v)}")
        return v

    def boolean(self, d: dict, key: str, name: str):
        if key in d and not isinstance(d[key], bool):
            self.fail(name, f"expected true or false, got {_short(d[key])}")

    def array(self, d: dict, key: str, n: int, what: str):
        v = d[key]
        if not isinstance(v, list):
            self.fail(key, f"expected a list, got {_short(v)}")
        if n >= 0 and len(v) != n:
            self.fail(key, f"lists {len(v)} {what} but the index holds {n} images")
        return v


def _short(value) -> str:
    """A one-line, bounded description of a JSON value for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_meta(meta: dict, native, path) -> None:
    """Check ``meta`` (the image metadata) key by key against its schema and against ``native``
    (the loaded :class:`~pypatch.PatchIndex`): types, ranges, one id/path/size per native
    image, each image's patch count equal to the grid's count for its size, the store and
    dims of the native index. Raises IndexFormatError (IndexVersionError for a newer format).

    Costs a few milliseconds per 10k images, less than parsing the JSON (benchmarks/bench_meta_load.py)."""
    c = _Check(path)
    if "format" not in meta:
        raise IndexFormatError(f"{path!r}: image metadata lacks format")
    fmt = c.integer(meta, "format", "format", 1)
    if fmt > META_FORMAT:  # a newer schema: say so before judging its keys
        from pypatch.errors import IndexVersionError

        raise IndexVersionError(
            f"{path!r}: image metadata format {fmt} is newer than this pypatch "
            f"(supports {META_FORMAT}); upgrade pypatch")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise IndexFormatError(f"{path!r}: image metadata lacks {', '.join(missing)}")
    n = len(native)
    dim = c.integer(meta, "dim", "dim", 1, _MAX_DIM)
    ids = c.array(meta, "ids", n, "ids")
    if not set(map(type, ids)) <= {str}:
        c.fail("ids", f"expected strings, got {_short(next(i for i in ids if type(i) is not str))}")
    if len(set(ids)) != n:
        c.fail("ids", "holds duplicate ids")
    paths = c.array(meta, "paths", n, "paths")
    if not set(map(type, paths)) <= {str, type(None)}:
        bad = next(p for p in paths if not (p is None or type(p) is str))
        c.fail("paths", f"expected strings or null, got {_short(bad)}")
    sizes = _sizes(c, c.array(meta, "sizes", n, "sizes"))
    if "removed" in meta:
        c.array(meta, "removed", -1, "")
    c.string(meta, "pypatch_version", "pypatch_version", optional=True)
    from pypatch.extract.modes import MODES

    c.string(meta, "mode", "mode", choices=MODES)
    grid = _grid(c, meta)
    _store(c, meta, native)
    _model(c, meta)
    _transform(c, meta, dim, native, path)
    _patch_counts(c, grid, sizes, ids, native)


def _sizes(c: _Check, sizes: list) -> np.ndarray:
    """(n, 2) int64 from ``[[w, h], ...]`` of ints in 1.._MAX_SIDE."""
    # fast path, type sets at C speed (a loop over the entries costs ~6 ms per 10k images)
    if (set(map(type, sizes)) <= {list} and set(map(len, sizes)) <= {2}
            and set(map(type, itertools.chain.from_iterable(sizes))) <= {int}):  # no bools
        try:
            a = np.fromiter(itertools.chain.from_iterable(sizes), dtype=np.int64,
                            count=2 * len(sizes)).reshape(len(sizes), 2)
        except OverflowError:
            a = None
        if a is not None and ((a > 0) & (a <= _MAX_SIDE)).all():
            return a
    for i, s in enumerate(sizes):  # name the first bad entry
        if not (type(s) is list and len(s) == 2 and type(s[0]) is int and type(s[1]) is int
                and 0 < s[0] <= _MAX_SIDE and 0 < s[1] <= _MAX_SIDE):
            c.fail("sizes", f"entry {i} is not [width, height] in 1..{_MAX_SIDE}: {_short(s)}")
    return np.asarray(sizes, dtype=np.int64).reshape(len(sizes), 2)


def _grid(c: _Check, meta: dict):
    regions = c.obj(meta, "regions", "regions")
    c.string(regions, "spec", "regions.spec")
    g = c.obj(regions, "grid", "regions.grid")
    kind = c.string(g, "kind", "regions.grid.kind", choices=tuple(_GRID_KEYS))
    if kind == "pyramid":
        c.integer(g, "levels", "regions.grid.levels", 0, MAX_PYRAMID_LEVEL)
        c.boolean(g, "shifted", "regions.grid.shifted")
        if g.get("shifted") and g["levels"] < 1:
            c.fail("regions.grid.shifted", "needs levels >= 1")
    elif kind == "rmac":
        c.integer(g, "levels", "regions.grid.levels", 1, 6)
        c.number(g, "overlap", "regions.grid.overlap", 0.0, 1.0, hi_open=True)
    else:
        c.integer(g, "levels", "regions.grid.levels", 1, 1)
        c.number(g, "window", "regions.grid.window", 0.0, 1.0, lo_open=True)
        c.number(g, "stride", "regions.grid.stride", 0.0, 1.0, lo_open=True)
    try:
        return grid_from_dict(g)
    except PypatchError as exc:  # not expected after the checks above; still one line
        c.fail("regions.grid", str(exc))


def _store(c: _Check, meta: dict, native) -> None:
    from pypatch.index.image_index import STORES

    store = c.obj(meta, "store", "store")
    kind = c.string(store, "kind", "store.kind", choices=STORES)
    native_kind = {None: "pq", "float32": "flat", "float16": "flat16"}[native.flat_dtype]
    if kind != native_kind:
        c.fail("store.kind", f"says {kind!r} but the index stores {native_kind!r}")
    c.integer(store, "trained_on_vectors", "store.trained_on_vectors", 0, optional=True)
    if kind != "pq":
        return
    pq = native.pq
    for key, value in (("m", pq.m), ("nbits", pq.nbits)):
        if c.integer(store, key, f"store.{key}", 1) != value:
            c.fail(f"store.{key}", f"says {store[key]} but the index's quantizer has {value}")
    # absent in indexes from before residual codebooks: those are product ones
    codebooks = c.string(store, "codebooks", "store.codebooks", choices=("residual", "product"),
                         optional=True) or "product"
    if codebooks != pq.kind:
        c.fail("store.codebooks", f"says {codebooks!r} but the index's quantizer is {pq.kind!r}")
    # how the codebooks were trained: shown by info(), never used again (a loaded index is
    # trained), so only their types are checked
    c.string(store, "train_on", "store.train_on")
    c.integer(store, "train_size", "store.train_size", 1)
    c.integer(store, "seed", "store.seed", 0)
    # the inverted file: the native index is authoritative for nprobe (saved in the file)
    nlist = c.integer(store, "nlist", "store.nlist", 1, optional=True) or 0
    if nlist != native.nlist:
        c.fail("store.nlist", f"says {nlist or 'none'} but the index has "
                              f"{native.nlist or 'no'} inverted lists")
    c.integer(store, "nprobe", "store.nprobe", 1, optional=True)


def _model(c: _Check, meta: dict) -> None:
    model = c.obj(meta, "model", "model")
    c.string(model, "name", "model.name", none=True)
    for key in ("spec", "path", "sha256"):
        c.string(model, key, f"model.{key}", none=True, optional=True)
    # the card is compared key by key with the query embedder's (check_model): any values
    c.obj(model, "card", "model.card")


def _transform(c: _Check, meta: dict, dim: int, native, path) -> None:
    """The stored transform must exist when declared and map the model's dim to the native
    one; without one, the native index must hold the model's dim and no XFRM section."""
    native_dim = int(native.dim)
    native_xfrm = native_transform(native)
    spec = meta.get("transform")
    if spec is None:
        if native_dim != dim:
            raise IndexFormatError(f"{path!r}: the index stores {native_dim}-dim vectors but "
                                   f"the model gives {dim} and no transform is recorded")
        if native_xfrm is not None:
            c.fail("transform", "is null but the index holds a pre-transform (XFRM section)")
        return
    if not isinstance(spec, dict):
        c.fail("transform", f"expected an object or null, got {_short(spec)}")
    from pypatch.index.transform import KIND

    c.string(spec, "kind", "transform.kind", choices=(KIND,))
    if c.integer(spec, "dim", "transform.dim", 1) != native_dim:
        c.fail("transform.dim", f"is {spec['dim']} but the index stores {native_dim}-dim vectors")
    c.number(spec, "power", "transform.power", -1.0, 0.0)
    for key in ("train_size", "seed", "trained_on_vectors"):
        c.integer(spec, key, f"transform.{key}", 0, optional=True)
    for key in ("auto", "opq"):
        c.boolean(spec, key, f"transform.{key}")
    if "fitted" not in spec:
        raise IndexFormatError(f"{path!r}: image metadata declares a transform but holds no "
                               f"fitted matrix")
    fitted = c.obj(spec, "fitted", "transform.fitted")
    c.integer(fitted, "dim_in", "transform.fitted.dim_in", 1, _MAX_DIM)
    c.integer(fitted, "dim_out", "transform.fitted.dim_out", 1, _MAX_DIM)
    c.number(fitted, "power", "transform.fitted.power", -1.0, 0.0)
    try:
        t = transform_from_meta(spec, native_xfrm)
    except IndexFormatError as exc:  # PCATransform.from_dict does not know the file
        raise IndexFormatError(f"{path!r}: {exc}") from None
    if t.dim_in != dim or t.dim_out != native_dim:
        raise IndexFormatError(
            f"{path!r}: stored transform maps {t.dim_in} -> {t.dim_out} dims but the model "
            f"gives {dim} and the index stores {native_dim}")


def _patch_counts(c: _Check, grid, sizes: np.ndarray, ids: list, native) -> None:
    """Each image owns as many native patches as the grid gives its size (vectorised)."""
    try:
        want = grid.counts(sizes)
    except PypatchError as exc:
        c.fail("sizes", str(exc))
    have = np.diff(np.asarray(native.image_offsets, dtype=np.int64))
    bad = np.flatnonzero(have != want)
    if bad.size:
        i = int(bad[0])
        w, h = (int(v) for v in sizes[i])
        c.fail("sizes", f"image {i} ({_short(ids[i])}, {w}x{h}) has {int(have[i])} patches in "
                        f"the index but the grid {grid!r} gives {int(want[i])} "
                        f"({bad.size} image(s) disagree)")
