"""Search results of the image-level index.

A hit names the database image, its score (inner product of the query descriptor with the
winning patch) and where in the image the match is: ``cell`` is the winning grid cell, ``level``
that cell's pyramid level, and ``box`` the best box pypatch has for the hit: ``cell`` itself, or
with ``search(..., refine=...)`` a box refined from it (:mod:`pypatch.index.refine`), which may
be larger or smaller than any grid cell. Refinement moves ``box`` only: ``cell``, ``level`` and
``patch`` keep describing the first stage's winning cell.
Boxes are ``[x0, y0, x1, y1]`` in original pixels with exclusive ``x1``/``y1`` (PIL crop
convention), recomputed from (image size, grid, patch ordinal): they are never stored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class SearchHit:
    """One ranked answer of :meth:`pypatch.ImageIndex.search`."""

    rank: int  # 1-based position in the ranking
    image: str  # the database image's id
    path: Optional[str]  # where the image was read from (None for in-memory images)
    score: float
    box: tuple  # best box [x0, y0, x1, y1]
    cell: tuple  # winning grid cell [x0, y0, x1, y1]
    level: int  # pyramid level of ``cell`` (0 = whole image), not of a refined ``box``
    patch: int  # ordinal of the winning patch inside its image

    @property
    def image_id(self) -> str:
        """Alias of ``image`` (the evaluation harness's hit protocol)."""
        return self.image

    def to_dict(self) -> dict:
        """JSON-ready dict (boxes as lists)."""
        d = asdict(self)
        d["box"] = list(self.box)
        d["cell"] = list(self.cell)
        return d

    def to_xywh(self) -> tuple:
        """``box`` as ``(x, y, w, h)`` (ILIAS's ``_bbox.txt`` convention)."""
        x0, y0, x1, y1 = self.box
        return (x0, y0, x1 - x0, y1 - y0)


def hit_json(hit: SearchHit) -> dict:
    """One hit as ``pypatch search --json`` and ``pypatch serve`` print it."""
    return {"rank": hit.rank, "image": hit.image, "score": round(hit.score, 6),
            "box": list(hit.box), "cell": list(hit.cell), "level": hit.level}
