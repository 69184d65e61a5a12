"""Image I/O (runtime/imageio.py) and one-image upscaling (runtime/upscale.py): every mode round-trips."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from runtime.backends import Backend
from runtime.errors import ImageError
from runtime.imageio import (ImageData, apply_orientation, encode_png16, encode_tiff16, images_in, images_under,
                             read_image, write_image)
from runtime.tiling import Tiler
from runtime.upscale import Upscaler

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


class Nearest(Backend):
    name = "nearest"

    def __init__(self, scale=2):
        self.scale = scale

    def run(self, batch):
        return batch.repeat(self.scale, axis=2).repeat(self.scale, axis=3)


def upscaler(scale=2, tile=16):
    return Upscaler(Nearest(scale), Tiler(scale, tile, overlap=4))


def rand(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    m = np.iinfo(dtype).max
    return rng.integers(0, m + 1, shape, dtype=np.int64).astype(dtype)


def up(a, s=2):
    return a.repeat(s, axis=0).repeat(s, axis=1)


# --------------------------------------------------------------------------- lossless round trips
CASES = [  # (name, make(tmp) -> path, expected pixels (H,W,C), expected alpha)
    "L8", "LA8", "RGB8", "RGBA8", "L16", "LA16", "RGB16", "RGBA16",
]


def _make(kind, fmt, tmp):
    h, w = 13, 21
    dt = np.uint16 if kind.endswith("16") else np.uint8
    ch = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[kind[:-1] if kind.endswith("8") else kind[:-2]]
    a = rand((h, w, ch), dt, seed=len(kind) + ch)
    path = tmp / f"in_{kind}.{fmt}"
    if dt == np.uint16:
        if ch == 1:
            Image.fromarray(a[:, :, 0]).save(path)  # Pillow writes 16-bit grey itself
        else:
            path.write_bytes(encode_png16(a) if fmt == "png" else encode_tiff16(a))
    else:
        Image.fromarray(a if ch > 1 else a[:, :, 0]).save(path)
    px, alpha = (a[:, :, :-1], a[:, :, -1]) if ch in (2, 4) else (a, None)
    if kind == "LA16" and fmt == "tiff":  # Pillow cannot open 16-bit grey+alpha TIFF: stored as RGBA
        px = np.repeat(px, 3, axis=2)
    return path, px, alpha


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("kind", CASES)
def test_lossless_roundtrip_size_depth_alpha_mode(tmp_path, fmt, kind):
    path, px, alpha = _make(kind, fmt, tmp_path)
    img = read_image(path)
    assert img.pixels.dtype == px.dtype == (np.uint16 if kind.endswith("16") else np.uint8)
    np.testing.assert_array_equal(img.pixels, px)
    if alpha is None:
        assert img.alpha is None
    else:
        np.testing.assert_array_equal(img.alpha, alpha)
    res = upscaler().upscale(img)
    out = write_image(tmp_path / f"out.{fmt}", res, fmt)
    back = read_image(out)
    assert back.size == (2 * px.shape[1], 2 * px.shape[0])
    assert back.pixels.dtype == px.dtype  # 16-bit in -> 16-bit out
    assert (back.pixels.shape[2] == 1) == (px.shape[2] == 1)
    np.testing.assert_array_equal(back.pixels, up(px))  # nearest stand-in: exact
    assert (back.alpha is None) == (alpha is None)
    if alpha is not None:  # bicubic alpha: exact at constant regions, close elsewhere
        assert np.abs(back.alpha.astype(float) - up(alpha)).mean() < 0.35 * np.iinfo(px.dtype).max


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_lossy_formats(tmp_path, fmt, mode):
    a = np.zeros((24, 32, 4), np.uint8)
    a[..., 0] = np.linspace(0, 255, 32)[None]
    a[..., 1] = np.linspace(0, 255, 24)[:, None]
    a[..., 2] = 128
    a[..., 3] = 200
    src = Image.fromarray(a).convert(mode)
    if fmt == "jpg" and mode == "RGBA":
        src = src.convert("RGB")
    path = tmp_path / f"in.{fmt}"
    src.save(path, quality=95)
    img = read_image(path)
    gray = mode == "L" and fmt == "jpg"  # WebP has no grey mode: it decodes as RGB
    assert img.pixels.dtype == np.uint8 and (img.pixels.shape[2] == 1) == gray
    res = upscaler().upscale(img)
    out = read_image(write_image(tmp_path / f"out.{fmt}", res, fmt, quality=95))
    assert out.size == (64, 48) and (out.pixels.shape[2] == 1) == gray
    assert (out.alpha is not None) == (mode == "RGBA" and fmt == "webp")
    assert np.abs(out.pixels.astype(int) - up(img.pixels).astype(int)).mean() < 3


def test_16bit_to_8bit_formats(tmp_path):
    a = rand((8, 10, 3), np.uint16)
    res = upscaler().upscale(ImageData(a, rand((8, 10), np.uint16, 1)))
    for fmt in ("jpg", "webp"):
        back = read_image(write_image(tmp_path / f"o.{fmt}", res, fmt, quality=100))
        assert back.pixels.dtype == np.uint8 and back.size == (20, 16)
        assert (back.alpha is None) == (fmt == "jpg")  # JPEG has no alpha


def test_palette_cmyk_bilevel_converted(tmp_path):
    rgb = Image.fromarray(rand((16, 16, 3), np.uint8))
    p = rgb.quantize(16)
    p.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(img.pixels, np.asarray(p.convert("RGB")))
    pt = p.copy()
    pt.info["transparency"] = 0
    pt.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png").alpha is not None
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    c = read_image(tmp_path / "c.jpg")
    assert c.pixels.shape == (16, 16, 3) and c.icc is None
    rgb.convert("CMYK").save(tmp_path / "c.tif")
    assert read_image(tmp_path / "c.tif").pixels.shape == (16, 16, 3)
    rgb.convert("1").save(tmp_path / "b.png")
    b = read_image(tmp_path / "b.png")
    assert b.pixels.shape[2] == 1 and set(np.unique(b.pixels)) <= {0, 255}


def test_png16_all_filter_types(tmp_path):
    """The 16-bit PNG decoder against a reference encoder that uses all five filters."""
    a = rand((9, 7, 3), np.uint16, 3)
    bpp = 6
    raw = a.astype(">u2").view(np.uint8).reshape(9, -1).astype(np.int32)
    rows = []
    prev = np.zeros(raw.shape[1], np.int32)
    for y, cur in enumerate(raw):
        ft = y % 5
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if ft == 0:
            f = cur
        elif ft == 1:
            f = cur - left
        elif ft == 2:
            f = cur - prev
        elif ft == 3:
            f = cur - (left + prev) // 2
        else:
            p = left + prev - ul
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - ul)
            f = cur - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
        rows.append(bytes([ft]) + (f & 255).astype(np.uint8).tobytes())
        prev = cur

    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 9, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    (tmp_path / "f.png").write_bytes(data)
    np.testing.assert_array_equal(read_image(tmp_path / "f.png").pixels, a)


# --------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    a = rand((6, 10, 3), np.uint8, orientation)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "maker"
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    img = read_image(tmp_path / "o.png")
    expect = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    np.testing.assert_array_equal(img.pixels, expect)
    np.testing.assert_array_equal(apply_orientation(a, orientation), expect)
    out = write_image(tmp_path / "out.png", upscaler().upscale(img))
    re = Image.open(out)
    assert re.getexif().get(0x0112, 1) == 1  # orientation not applied twice
    assert re.size == (2 * expect.shape[1], 2 * expect.shape[0])


@pytest.mark.parametrize("fmt,bits", [("png", 8), ("png", 16), ("jpg", 8), ("webp", 8), ("tiff", 8), ("tiff", 16)])
def test_icc_profile_carried(tmp_path, fmt, bits):
    dt = np.uint16 if bits == 16 else np.uint8
    img = ImageData(rand((8, 8, 3), dt), icc=SRGB)
    out = write_image(tmp_path / f"o.{fmt}", upscaler().upscale(img), fmt)
    back = read_image(out)
    assert back.icc == SRGB
    assert Image.open(out).info.get("icc_profile") == SRGB


# --------------------------------------------------------------------------- bad input and safety
def test_bad_inputs_raise_image_error(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(rand((64, 64, 3), np.uint8)).save(good)
    Image.fromarray(rand((64, 64, 3), np.uint8)).save(tmp_path / "g.jpg")
    cases = {
        "empty.png": b"",
        "text.png": b"hello, I am not an image\n",
        "trunc.png": good.read_bytes()[:200],
        "trunc.jpg": (tmp_path / "g.jpg").read_bytes()[:300],
        "trunc16.png": encode_png16(rand((20, 20, 3), np.uint16))[:120],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name)
    with pytest.raises(ImageError):
        read_image(tmp_path)  # a folder
    with pytest.raises(ImageError):
        read_image(tmp_path / "missing.png")


def test_decompression_bomb_guard_kept(tmp_path, monkeypatch):
    Image.fromarray(rand((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "big16.png").write_bytes(encode_png16(rand((40, 40, 3), np.uint16)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name in ("big.png", "big16.png"):
        with pytest.raises(ImageError, match="too many pixels"):
            read_image(tmp_path / name)


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    img = ImageData(rand((8, 8, 3), np.uint8))
    write_image(tmp_path / "a.png", img)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~mask

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_image(tmp_path / "b.png", img)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temp, no partial b.png


def test_images_under_takes_image_names_and_skips_hidden_files(tmp_path):
    """The folder scans shared by evaluation, training, calibration and data preparation."""
    (tmp_path / "b").mkdir()
    for name in ["a.PNG", "b/c.jpg", "b/d.tiff", "._a.jpg", "b/notes.txt", "b/.hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # a folder with an image's name is not an image
    assert images_under(tmp_path) == [tmp_path / "a.PNG", tmp_path / "b/c.jpg", tmp_path / "b/d.tiff"]
    # files as given (any name), then folders scanned, in the order given; a missing path is an error
    (tmp_path / "notes.txt").write_bytes(b"x")
    assert images_in([tmp_path / "notes.txt", tmp_path / "b"]) == [tmp_path / "notes.txt", tmp_path / "b/c.jpg",
                                                                   tmp_path / "b/d.tiff"]
    with pytest.raises(FileNotFoundError, match="no such file or folder") as e:
        images_in([tmp_path / "b", tmp_path / "nowhere"])
    assert e.value.filename == str(tmp_path / "nowhere")
