"""Folders of real photos for ImageIndex tests: skimage photos and a crop of each, or a few
photos and a scene with a cat pasted at a known box."""
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


CAT_BOX = (60, 220, 200, 330)  # where write_cat_scene pastes the cat in coffee


def write_cat_scene(root: Path, names=("astronaut", "rocket", "immunohistochemistry")) -> Path:
    """Saves each skimage photo of ``names`` as a PNG (``immunohistochemistry`` as ``ihc.png``)
    and ``scene.png``: coffee with chelsea resized into :data:`CAT_BOX`."""
    from PIL import Image
    from skimage import data as skimage_data

    for name in names:
        short = "ihc" if name == "immunohistochemistry" else name
        Image.fromarray(getattr(skimage_data, name)()).save(root / f"{short}.png")
    return save_cat_scene(root)


def save_cat_scene(root: Path) -> Path:
    """Saves ``scene.png`` in ``root``: coffee with chelsea resized into :data:`CAT_BOX`."""
    from PIL import Image
    from skimage import data as skimage_data

    scene = Image.fromarray(skimage_data.coffee()).copy()
    x0, y0, x1, y1 = CAT_BOX
    scene.paste(Image.fromarray(skimage_data.chelsea()).resize((x1 - x0, y1 - y0), Image.BICUBIC),
                (x0, y0))
    scene.save(root / "scene.png")
    return root
