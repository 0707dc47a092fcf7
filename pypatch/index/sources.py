"""Where database images come from: a folder, a list of paths, or an iterable of images.

Every source is turned into a stream of :class:`SourceItem` ``(id, image, path)``:

- a **folder** is walked recursively in sorted order (deterministic ids); files whose extension
  is in :data:`IMAGE_EXTENSIONS` are kept and each id is the path relative to the folder, in
  POSIX form (``"sub/cat.jpg"``);
- a **single image file** is one item whose id is its file name;
- a **list/iterable of paths** gives one item per path, id = the path as given;
- an **iterable of ``(id, image)`` pairs** (image = path, PIL image or numpy array) keeps the
  caller's ids; bare PIL images / arrays get their position as id (``"0"``, ``"1"``, ...).

Nothing is decoded here: decoding errors surface later, per image, and are reported as skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from pypatch.errors import InvalidArgumentError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class SourceItem:
    id: str
    image: Any  # a path (str), a PIL image or a numpy array
    path: Optional[str]  # str path when the image lives in a file, else None


def walk_folder(folder: Path, extensions=IMAGE_EXTENSIONS) -> list:
    """Image files under ``folder`` (recursive, sorted, hidden entries skipped)."""
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                found.append(Path(root) / name)
    return found


def iter_source(source, extensions=IMAGE_EXTENSIONS) -> Iterator[SourceItem]:
    """Normalise ``source`` into :class:`SourceItem` s (see the module docstring)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = walk_folder(path, extensions)
            if not files:
                raise InvalidArgumentError(
                    f"source: folder {str(path)!r} holds no images with extensions "
                    f"{', '.join(sorted(extensions))}"
                )
            for f in files:
                yield SourceItem(f.relative_to(path).as_posix(), str(f), str(f))
            return
        if path.is_file():
            yield SourceItem(path.name, str(path), str(path))
            return
        raise InvalidArgumentError(f"source: no such file or folder: {str(path)!r}")
    if isinstance(source, (bytes, dict)):
        raise InvalidArgumentError(
            f"source: expected a folder, a list of paths or an iterable of (id, image); "
            f"got {type(source).__name__}"
        )
    try:
        iterator = iter(source)
    except TypeError:
        raise InvalidArgumentError(
            f"source: expected a folder, a list of paths or an iterable of (id, image); "
            f"got {type(source).__name__}"
        ) from None
    for position, item in enumerate(iterator):
        yield _item(position, item)


def _item(position: int, item) -> SourceItem:
    if isinstance(item, SourceItem):
        return item
    if isinstance(item, (str, os.PathLike)):
        return SourceItem(str(item), str(item), str(item))
    if isinstance(item, tuple) and len(item) == 2:
        image_id, image = item
        if not isinstance(image_id, (str, int)):
            raise InvalidArgumentError(
                f"source item {position}: id must be str or int, got {type(image_id).__name__}"
            )
        path = str(image) if isinstance(image, (str, os.PathLike)) else None
        return SourceItem(str(image_id), path if path is not None else image, path)
    return SourceItem(str(position), item, None)


def source_length(source) -> Optional[int]:
    """Number of items when cheap to know (for the progress bar), else None."""
    if isinstance(source, (str, os.PathLike)):
        return None
    try:
        return len(source)
    except TypeError:
        return None
