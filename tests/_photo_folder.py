"""A folder of real photos for ImageIndex tests: skimage photos and a crop of each."""
from __future__ import annotations

from pathlib import Path

SIX_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera")


def write_photos_and_crops(root: Path, names=SIX_PHOTOS) -> Path:
    """Saves each skimage photo of ``names`` and its lower-left crop (3/4 x 3/4) as PNGs."""
    from PIL import Image
    from skimage import data as skimage_data

    for name in names:
        arr = getattr(skimage_data, name)()
        Image.fromarray(arr).save(root / f"{name}.png")
        h, w = arr.shape[:2]
        Image.fromarray(arr[h // 4:, : 3 * w // 4]).save(root / f"{name}_crop.png")
    return root
