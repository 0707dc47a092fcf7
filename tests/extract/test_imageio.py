"""Image loading: modes, EXIF, and every kind of bad image -> a typed error naming the image."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data

from pypatch.errors import ImageError, InvalidTypeError
from pypatch.extract.imageio import load_image


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()  # 300x451x3 uint8


def save(tmp_path, img: Image.Image, name: str, **kw) -> str:
    path = str(tmp_path / name)
    img.save(path, **kw)
    return path


def test_path_png_round_trip(tmp_path, chelsea):
    path = save(tmp_path, Image.fromarray(chelsea), "c.png")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (451, 300)
    assert np.array_equal(np.asarray(img), chelsea)


def test_numpy_and_pil_inputs(chelsea):
    assert np.array_equal(np.asarray(load_image(chelsea)), chelsea)
    assert np.array_equal(np.asarray(load_image(Image.fromarray(chelsea))), chelsea)
    gray = data.camera()
    out = np.asarray(load_image(gray))
    assert out.shape == gray.shape + (3,) and np.array_equal(out[..., 1], gray)
    assert np.array_equal(np.asarray(load_image(gray[..., None])), out)


def test_exif_orientation_is_applied(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(tmp_path, Image.fromarray(chelsea), "rot.jpg", exif=exif, quality=95)
    plain = np.asarray(load_image(save(tmp_path, Image.fromarray(chelsea), "plain.jpg", quality=95)))
    img = load_image(path)
    assert img.size == (300, 451)  # displayed orientation
    expected = np.rot90(plain, k=-1)  # 90 degrees clockwise
    assert np.abs(np.asarray(img).astype(int) - expected).mean() < 1.0


def test_cmyk_jpeg_converted(tmp_path, chelsea):
    path = save(tmp_path, Image.fromarray(chelsea).convert("CMYK"), "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    img = np.asarray(load_image(path)).astype(int)
    assert img.shape == chelsea.shape and np.abs(img - chelsea).mean() < 4.0


def test_16bit_grayscale_scaled_not_clipped(tmp_path):
    gray = data.camera()
    img16 = Image.fromarray(gray.astype(np.uint16) * 257)  # full 16-bit range
    path = save(tmp_path, img16, "g16.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))
    assert np.array_equal(out[..., 0], gray)  # Image.convert would have clipped all to 255


def test_float_image_in_unit_range():
    arr = (data.camera() / 255.0).astype(np.float32)
    out = np.asarray(load_image(Image.fromarray(arr, mode="F")))
    assert np.abs(out[..., 0].astype(int) - data.camera()).max() <= 1


def test_palette_and_palette_transparency(tmp_path, chelsea):
    pal = Image.fromarray(chelsea).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert np.array_equal(np.asarray(load_image(save(tmp_path, pal, "p.png"))), np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = int(np.asarray(pal)[0, 0])
    path = save(tmp_path, pal, "pt.png", transparency=int(np.asarray(pal)[0, 0]))
    out = np.asarray(load_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index composited on white


def test_alpha_composited_on_white_or_dropped(chelsea):
    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0      # fully transparent rows
    rgba[10:20, :, 3] = 128  # half transparent rows
    out = np.asarray(load_image(rgba)).astype(int)
    assert np.all(out[:10] == 255)
    assert np.array_equal(out[20:], chelsea[20:])
    half = chelsea[10:20].astype(int) * 128 / 255 + 255 * 127 / 255
    assert np.abs(out[10:20] - half).max() <= 1
    dropped = np.asarray(load_image(rgba, alpha="drop"))
    assert np.array_equal(dropped, chelsea)
    la = Image.fromarray(rgba).convert("LA")
    assert np.all(np.asarray(load_image(la))[:10] == 255)


def test_truncated_file_raises_naming_it(tmp_path, chelsea):
    good = save(tmp_path, Image.fromarray(chelsea), "full.jpg", quality=95)
    raw = open(good, "rb").read()
    path = tmp_path / "cut.jpg"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg.*truncated"):
        load_image(str(path))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # we never flip Pillow's global switch


def test_empty_missing_and_corrupt_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png.*empty file"):
        load_image(str(empty))
    with pytest.raises(ImageError, match=r"nothere\.jpg.*not found"):
        load_image(str(tmp_path / "nothere.jpg"))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=r"junk\.jpg.*not a recognised"):
        load_image(str(junk))
    with pytest.raises(ImageError, match="directory"):
        load_image(str(tmp_path))
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_corrupt_png_data_raises(tmp_path, chelsea):
    buf = io.BytesIO()
    Image.fromarray(chelsea).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    mid = len(raw) // 2
    raw[mid:mid + 200] = bytes(200)  # damage the compressed pixel stream
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match=r"bad\.png"):
        load_image(str(path))


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_enormous_dimensions_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(60000, 60000))  # 3.6 Gpx declared in a ~60-byte file
    with pytest.raises(ImageError, match=r"bomb\.png.*too large"):
        load_image(str(path))
    with pytest.raises(ImageError, match="too large"):
        load_image(data.astronaut(), max_pixels=512 * 511)
    assert load_image(data.astronaut(), max_pixels=512 * 512).size == (512, 512)


def test_zero_size_and_bad_arrays():
    with pytest.raises(ImageError, match="zero-size"):
        load_image(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InvalidTypeError, match="uint8"):
        load_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InvalidTypeError, match="int"):
        load_image(42)


def test_error_names_the_given_name():
    with pytest.raises(ImageError, match="db/image_7"):
        load_image(np.zeros((0, 4), np.uint8), name="db/image_7")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_damaged_files_load_or_raise_image_error_only(tmp_path, fmt):
    # random cuts and byte flips: every outcome is an RGB image or an ImageError, never another error
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()[:96, :128]).save(buf, format=fmt)
    raw = buf.getvalue()
    rng = np.random.default_rng(len(raw))
    outcomes = set()
    for trial in range(12):
        damaged = bytearray(raw[: int(rng.integers(8, len(raw)))] if trial % 2 else raw)
        for pos in rng.integers(0, len(damaged), size=4):
            damaged[pos] = int(rng.integers(0, 256))
        try:
            img = load_image(bytes(damaged), name=f"{fmt}-{trial}")
            assert img.mode == "RGB" and img.width > 0
            outcomes.add("ok")
        except ImageError as exc:
            assert f"{fmt}-{trial}" in str(exc)
            outcomes.add("error")
    assert "error" in outcomes
