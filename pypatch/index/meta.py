"""The saved state of an :class:`~pypatch.ImageIndex`: its JSON metadata, written and checked.

An image index is one native index file whose JSON ``metadata`` holds, under :data:`META_KEY`,
what maps the core's image numbers back to the user's world (ids, paths, sizes, the grid, the
model identity, the store settings and the fitted pre-transform). This module builds that dict,
turns it back into objects, and refuses files whose metadata does not fit the native index.
"""
from __future__ import annotations

from pypatch.errors import IndexFormatError

META_KEY = "pypatch.image_index"  # the metadata entry that marks an image-level index
# 3: a learned pre-transform whose mean and matrix live in the native XFRM section (META keeps
#    dims, power, eigenvalues); 2: the whole transform as base64 in META (still read);
# 1: no transform (files without one are still written as 1, readable by any pypatch).
META_FORMAT = 3
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
               format=3 if out.get("transform") else 1)
    return out


def read_meta(patch_index, path) -> dict:
    """The image metadata of a loaded native index, checked against it (IndexFormatError)."""
    metadata = getattr(patch_index, "metadata", None) or {}
    meta = metadata.get(META_KEY) if isinstance(metadata, dict) else None
    if not isinstance(meta, dict):
        raise IndexFormatError(
            f"{path!r} is a vector-level PatchIndex without image metadata; open it with "
            f"pypatch.PatchIndex.load")
    check_meta(meta, len(patch_index), path)
    check_transform_meta(meta, int(patch_index.dim), path, native_transform(patch_index))
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


def check_transform_meta(meta: dict, native_dim: int, path, native=None) -> None:
    """The stored transform must exist when declared and map the model's D to the native dim."""
    spec = meta.get("transform")
    if not spec:
        if native_dim != meta["dim"]:
            raise IndexFormatError(f"{path!r}: the index stores {native_dim}-dim vectors but "
                                   f"the model gives {meta['dim']} and no transform is recorded")
        return
    if not isinstance(spec, dict) or "fitted" not in spec:
        raise IndexFormatError(f"{path!r}: image metadata declares a transform but holds no "
                               f"fitted matrix")
    t = transform_from_meta(spec, native)
    if t.dim_in != meta["dim"] or t.dim_out != native_dim or spec.get("dim") != native_dim:
        raise IndexFormatError(
            f"{path!r}: stored transform maps {t.dim_in} -> {t.dim_out} dims but the model "
            f"gives {meta['dim']} and the index stores {native_dim}")


def check_meta(meta: dict, n_native: int, path) -> None:
    """Every required key present, a format this pypatch reads, one entry per native image."""
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise IndexFormatError(f"{path!r}: image metadata lacks {', '.join(missing)}")
    if meta["format"] > META_FORMAT:
        from pypatch.errors import IndexVersionError

        raise IndexVersionError(
            f"{path!r}: image metadata format {meta['format']} is newer than this pypatch "
            f"(supports {META_FORMAT}); upgrade pypatch")
    if not (len(meta["ids"]) == len(meta["paths"]) == len(meta["sizes"]) == n_native):
        raise IndexFormatError(
            f"{path!r}: image metadata lists {len(meta['ids'])} images but the index holds "
            f"{n_native}")
