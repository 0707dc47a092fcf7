"""Image loading: anything image-like -> an RGB ``PIL.Image``, or a typed ``ImageError``.

Accepted inputs: a path (str / os.PathLike), encoded ``bytes``, a ``PIL.Image.Image``, or a uint8
numpy array of shape HxW, HxWx1, HxWx3 or HxWx4 (RGBA). Paths and PIL images are EXIF-transposed
(``ImageOps.exif_transpose``), so boxes are in the *displayed* orientation.

Mode policy (so that no mode is silently mangled):
* alpha (RGBA, LA, PA, RGBa, La, palette with transparency) is composited on white by default
  (``alpha="white"``) or dropped (``alpha="drop"``), so transparent areas do not turn black;
* 16-bit / 32-bit integer grayscale (I;16*, I) is scaled to 8 bits (value / 257, clipped),
  not clipped at 255 as ``Image.convert`` would do; float (F) is taken as [0, 1] if its max <= 1,
  else as [0, 255];
* CMYK, YCbCr, HSV, 1-bit, L and palette use Pillow's conversion to RGB.

Truncated files: we do **not** set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (revisitop does, globally).
It is a process-wide switch that silently fills the missing part with grey, which would give a
corrupt file a plausible but wrong embedding and change every other library in the process. A
truncated file therefore raises ``ImageError``; a user who really wants the lenient behaviour sets
the Pillow flag themselves and we honour it.

Enormous images (more than ``max_pixels``, default Pillow's ``MAX_IMAGE_PIXELS``, about 89 Mpx) are
refused from the header, before decoding (decompression-bomb guard).
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pypatch.errors import ImageError, InvalidArgumentError, InvalidTypeError

#: default decompression-bomb limit, in pixels (Pillow's own warning threshold)
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def describe(image: Any) -> str:
    """A short human name for an image-like object, used in error messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height} {image.mode}>"
    if isinstance(image, np.ndarray):
        return f"<array {image.shape} {image.dtype}>"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} encoded bytes>"
    return f"<{type(image).__name__}>"


def _check_pixels(width: int, height: int, name: str, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: zero-size image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: image too large ({width}x{height} = {width * height} pixels > max_pixels={max_pixels}; "
            "possible decompression bomb -- raise max_pixels if the image is trusted)"
        )


def _open_encoded(source: Any, name: str, max_pixels: int | None) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ImageError(f"{name}: file not found")
        if os.path.isdir(path):
            raise ImageError(f"{name}: is a directory, not an image file")
        if os.path.getsize(path) == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = bytes(source)
        if not data:
            raise ImageError(f"{name}: empty image data (0 bytes)")
    try:
        # Pillow's own bomb check runs inside open(); we apply ours right after, from the header.
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image format (corrupt or not an image)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large (decompression bomb guard): {exc}") from None
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, struct.error, IndexError...
        raise ImageError(f"{name}: cannot open image ({type(exc).__name__}: {exc})") from None
    _check_pixels(img.width, img.height, name, max_pixels)
    try:
        img.load()
    except Exception as exc:  # as above: a bad file must be a per-image error, never a crash
        why = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise ImageError(f"{name}: {why} image data ({type(exc).__name__}: {exc})") from None
    return img


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    if arr.dtype != np.uint8:
        raise InvalidTypeError(f"{name}: numpy images must be uint8 (HxW, HxWx3 or HxWx4); got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: numpy images must have shape HxW, HxWx1, HxWx3 or HxWx4; got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: zero-size image (shape {arr.shape})")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        finite_max = np.nanmax(a) if a.size else 0.0
        a = a * 255.0 if finite_max <= 1.0 else a
    else:  # I;16, I;16B, I;16L, I: 16-bit range -> 8 bits
        a = a.astype(np.float64) / 257.0
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, name: str = "image", alpha: str = "white") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB following the module's mode policy."""
    if alpha not in ("white", "drop"):
        raise InvalidArgumentError(f"alpha must be 'white' or 'drop'; got {alpha!r}")
    mode = img.mode
    try:
        if mode == "RGB":
            return img
        if mode == "P":
            img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
            mode = img.mode
            if mode == "RGB":
                return img
        if mode.startswith("I") or mode == "F":
            return _high_depth_to_l(img).convert("RGB")
        if mode in _ALPHA_MODES:
            rgba = img.convert("RGBA")
            if alpha == "drop":
                return rgba.convert("RGB")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name}: cannot convert image mode {mode!r} to RGB ({exc})") from None


def load_image(image: Any, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               alpha: str = "white") -> Image.Image:
    """Load an image-like object as an RGB PIL image (EXIF-transposed for files and PIL images).

    Raises ImageError (naming the image and the reason) for missing, empty, truncated, corrupt,
    zero-size or too-large images, InvalidTypeError for unsupported input types or dtypes.
    """
    label = name if name is not None else describe(image)
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        img = _open_encoded(image, label, max_pixels)
    elif isinstance(image, Image.Image):
        img = image
        _check_pixels(img.width, img.height, label, max_pixels)
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"{label}: cannot decode image ({exc})") from None
    elif isinstance(image, np.ndarray):
        img = _from_array(image, label)
        _check_pixels(img.width, img.height, label, max_pixels)
        return to_rgb(img, label, alpha)
    else:
        raise InvalidTypeError(
            f"{label}: expected an image path, encoded bytes, a PIL image or a uint8 numpy array; "
            f"got {type(image).__name__}"
        )
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # a malformed EXIF block must not be a crash; Pillow raises varied types
        raise ImageError(f"{label}: malformed EXIF orientation data ({exc})") from None
    return to_rgb(img, label, alpha)


def truncated_images_allowed() -> bool:
    """Whether the user switched on Pillow's lenient truncated-file loading (we never do)."""
    return bool(ImageFile.LOAD_TRUNCATED_IMAGES)


__all__ = ["load_image", "to_rgb", "describe", "DEFAULT_MAX_PIXELS", "truncated_images_allowed"]
