"""What the Embedder hands back for many images: one PatchEmbedding per usable image, in input
order, and the images it skipped (with why)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PatchEmbedding:
    """Descriptors of one image: ``vectors (P, D)`` float32, ``boxes (P, 4)`` int32, ``levels (P,)``."""
    index: int
    name: str
    width: int
    height: int
    vectors: np.ndarray
    boxes: np.ndarray
    levels: np.ndarray
    maps: Any = None  # (D, H, W) stitched finest-level feature map (``embed_many(maps=True)``)


@dataclass
class SkippedImage:
    index: int
    name: str
    reason: str


@dataclass
class Prepared:
    """One decoded image's backbone input, ready for a batch (or the error that stopped it)."""
    index: int
    name: str
    width: int = 0
    height: int = 0
    boxes: Any = None
    levels: Any = None
    tensor: Any = None
    error: str | None = None
    exc: BaseException | None = None


class EmbedResults:
    """Iterator over ``PatchEmbedding`` of the images that worked, in input order.

    ``skipped`` lists ``SkippedImage(index, name, reason)``; it is complete once iteration ends.
    """

    def __init__(self, gen_factory) -> None:
        self.skipped: list[SkippedImage] = []
        self._it = gen_factory(self.skipped)

    def __iter__(self) -> Iterator[PatchEmbedding]:
        return self

    def __next__(self) -> PatchEmbedding:
        return next(self._it)

    def close(self) -> None:
        self._it.close()
