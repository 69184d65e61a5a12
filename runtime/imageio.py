"""Image I/O for the runtime.

``read_image`` returns an :class:`ImageData`: pixels (H, W, 1|3) uint8 or uint16, an optional
alpha plane of the same depth, the ICC profile and the EXIF block (orientation already applied to
the pixels and removed from the EXIF). Palette, CMYK, YCbCr, LAB, HSV, 1-bit and 32-bit modes are
converted. 16-bit in gives 16-bit out (PNG, TIFF).

Codecs: Pillow opens every file first (format, EXIF, ICC, and its decompression-bomb guard on the
header's size) and decodes 8-bit images. Pillow has no 16-bit colour mode, so 16-bit PNGs are
decoded and encoded by imagecodecs (libpng) and 16-bit colour TIFFs by tifffile (with
imagecodecs' codecs). Both decode into a buffer of the header's size, so a zlib bomb cannot grow
memory past what the header declared, and the header was already checked.

``write_image`` writes atomically (temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from mambacsr.atomic import atomic_write
from runtime.errors import ImageError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}
EXTENSIONS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tiff"}
# file names taken for images wherever folders are scanned (the CLI, evaluation, calibration,
# data preparation); the content, not the name, decides how a file is read
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm",
                            ".pgm", ".pnm", ".tga"})


def is_image_name(path: Path) -> bool:
    """Whether a file is taken for an image when a folder is scanned (hidden names, such as
    `._photo.jpg` sidecar files, are not)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def images_under(folder: str | Path) -> list[Path]:
    """The image files under `folder`, recursively, sorted: what evaluation, training,
    calibration and data preparation read (the CLI walks folders itself, to report unreadable
    ones and follow links)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p))


def images_in(paths) -> list[Path]:
    """Files given directly, plus the images under each folder given (`images_under`), in the
    order given. A path that is neither raises FileNotFoundError naming it (a mistyped folder must
    not read as an empty one)."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            out += images_under(p)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(p))
    return out


ORIENTATION = 0x0112
PNG_SIG = b"\x89PNG\r\n\x1a\n"

assert not ImageFile.LOAD_TRUNCATED_IMAGES  # truncated files must fail, not load half an image


@dataclass
class ImageData:
    pixels: np.ndarray  # (H, W, C) C in {1, 3}, uint8 or uint16
    alpha: np.ndarray | None = None  # (H, W), same dtype as pixels
    icc: bytes | None = None
    exif: bytes | None = None
    source_format: str | None = None
    notes: list[str] = field(default_factory=list)  # things the user should hear about this file

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.pixels.shape[1], self.pixels.shape[0]


# ---------------------------------------------------------------------------------------- orientation
def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, -1)
    elif orientation == 7:
        a = a.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------- 16-bit codecs
def _png_bit_depth(path: Path) -> int:
    """The bit depth field of a PNG's IHDR (0 when the file is too short to have one)."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head[:8] == PNG_SIG and head[12:16] == b"IHDR" else 0


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _decode_png16(path: Path, notes: list[str]) -> np.ndarray:
    """libpng's warnings about this file (logged by imagecodecs) become notes on the image."""
    import imagecodecs  # the 16-bit codecs load only when a 16-bit file is met (import cost)

    logger = logging.getLogger("imagecodecs")
    said, propagate = _Collect(), logger.propagate
    logger.addHandler(said)
    logger.propagate = False
    try:
        a = imagecodecs.png_decode(path.read_bytes())
    finally:
        logger.removeHandler(said)
        logger.propagate = propagate
    notes.extend(f"libpng: {m.removeprefix('PNG warning: ')}" for m in said.messages)
    return a


def _decode_tiff16(path: Path) -> np.ndarray:
    import tifffile

    a = tifffile.imread(str(path), key=0, maxworkers=1)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):  # planar
        a = np.moveaxis(a, 0, -1)
    return a.astype(np.uint16, copy=False)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def encode_png16(a: np.ndarray, icc: bytes | None = None) -> bytes:
    """(H, W, C) uint16, C in 1..4, as a 16-bit PNG (libpng through imagecodecs).

    libpng writes no ICC profile here, so an iCCP chunk is placed after IHDR (where the PNG
    specification wants it: before any IDAT)."""
    import imagecodecs

    a = np.ascontiguousarray(a[:, :, 0] if a.shape[2] == 1 else a, dtype=np.uint16)
    data = bytes(imagecodecs.png_encode(a, level=6))
    if icc:
        end = 8 + 8 + 13 + 4  # signature, IHDR length/type, IHDR body, CRC
        data = data[:end] + _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)) + data[end:]
    return data


def encode_tiff16(a: np.ndarray, icc: bytes | None = None) -> bytes:
    """(H, W, C) uint16 as a deflate-compressed TIFF (tifffile)."""
    if a.shape[2] == 2:  # Pillow cannot open 16-bit grey+alpha TIFFs: store it as RGBA
        a = np.concatenate([a[:, :, :1]] * 3 + [a[:, :, 1:]], axis=2)
    import tifffile

    ch = a.shape[2]
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(a[:, :, 0] if ch == 1 else a, dtype=np.uint16),
                     photometric="minisblack" if ch == 1 else "rgb",
                     extrasamples=["unassalpha"] if ch == 4 else None,
                     compression="zlib", iccprofile=icc or None, metadata=None)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- reading
def _split_alpha(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if a.ndim == 2:
        return a[:, :, None], None
    if a.shape[2] in (2, 4):
        return np.ascontiguousarray(a[:, :, :-1]), np.ascontiguousarray(a[:, :, -1])
    return a, None


def _from_pil(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "RGBX":
        im = im.convert("RGB")
    elif mode == "CMYK":
        converted = None
        if icc:
            try:
                from PIL import ImageCms
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                converted = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            except Exception:  # a broken embedded profile: the plain conversion below
                converted = None
        im = converted if converted is not None else im.convert("RGB")
        icc = None  # the CMYK profile does not describe the RGB result (now sRGB)
    elif mode in ("YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        icc = None if mode != "YCbCr" else icc
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[:, :, None], None, icc
    if im.mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)[:, :, None], None, icc
    if im.mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32))
        if f.max(initial=0.0) <= 1.0:
            return np.rint(np.clip(f, 0, 1) * 65535).astype(np.uint16)[:, :, None], None, icc
        return np.rint(np.clip(f, 0, 255)).astype(np.uint8)[:, :, None], None, icc
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.mode else "RGB")
    px, alpha = _split_alpha(np.asarray(im))
    return px, alpha, icc


def _too_many_pixels(e: Exception) -> str:
    m = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(m.group(1)):,} pixels" if m else "the image"
    return (f"refused, too many pixels: {size} is over the {Image.MAX_IMAGE_PIXELS:,}-pixel "
            f"decompression-bomb limit; split the image into parts first")


def read_image(path) -> ImageData:
    """Read one image; raises ImageError (one line naming the file) on any problem."""
    path = Path(path)
    notes: list[str] = []
    try:
        if not path.is_file():
            raise ImageError("broken or looping symbolic link" if path.is_symlink() else "not a file")
        if path.stat().st_size == 0:
            raise ImageError("empty file")
        with warnings.catch_warnings():
            # over Pillow's limit: refused, not a raw warning (2x the limit is refused by Pillow)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            fmt = im.format
            frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) or fmt == "TIFF" else 1
            if frames > 1:
                notes.append(f"{frames} frames: only the first is upscaled (split the frames to upscale each)")
            icc = im.info.get("icc_profile") or None
            exif_obj = im.getexif()
            orientation = int(exif_obj.get(ORIENTATION, 1) or 1)
            exif = None
            if len(exif_obj):
                if ORIENTATION in exif_obj:
                    del exif_obj[ORIENTATION]
                exif = exif_obj.tobytes() if len(exif_obj) else None
            if fmt == "PNG" and _png_bit_depth(path) == 16:
                px, alpha = _split_alpha(_decode_png16(path, notes))
            elif fmt == "TIFF" and im.mode in ("RGB", "RGBA") and 16 in tuple(im.tag_v2.get(258, (8,)) or (8,)):
                px, alpha = _split_alpha(_decode_tiff16(path))
            else:
                im.load()
                px, alpha, icc = _from_pil(im, icc)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or an unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: {_too_many_pixels(e)}") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode it") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied: make it readable") from None
    except Exception as e:  # any decoder failure on an untrusted file is that file's problem
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{path}: unreadable or truncated ({msg})") from None
    if px.ndim != 3 or px.shape[0] == 0 or px.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    if orientation != 1:
        px = apply_orientation(px, orientation)
        alpha = apply_orientation(alpha, orientation) if alpha is not None else None
    return ImageData(px, alpha, icc, exif, fmt, notes)


# ---------------------------------------------------------------------------------------- writing
def normalize_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    if f not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: use png, jpg, webp or tiff")
    return f


def format_of(path) -> str | None:
    """The output format a file name asks for (``out.JPG`` -> ``jpg``), or None."""
    f = Path(path).suffix.lower().lstrip(".")
    return f if f in FORMATS else None


def _to8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def encode_image(img: ImageData, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode to bytes in ``fmt``. JPEG has no alpha (dropped); JPEG and WebP are 8-bit."""
    fmt = normalize_format(fmt)
    pil_fmt = FORMATS[fmt]
    px, alpha = img.pixels, img.alpha
    if pil_fmt == "JPEG":
        alpha = None
    if pil_fmt in ("JPEG", "WEBP"):
        px, alpha = _to8(px), (_to8(alpha) if alpha is not None else None)
    if px.dtype == np.uint16:
        a = px if alpha is None else np.concatenate([px, alpha[:, :, None].astype(np.uint16)], axis=2)
        return encode_png16(a, img.icc) if pil_fmt == "PNG" else encode_tiff16(a, img.icc)
    if alpha is not None:
        a = np.concatenate([px, _to8(alpha)[:, :, None]], axis=2)
        mode = "LA" if px.shape[2] == 1 else "RGBA"
    else:
        a = px[:, :, 0] if px.shape[2] == 1 else px
        mode = "L" if px.shape[2] == 1 else "RGB"
    pim = Image.fromarray(np.ascontiguousarray(a))
    assert pim.mode == mode, (pim.mode, mode)
    kw = {}
    if img.icc:
        kw["icc_profile"] = img.icc
    if img.exif and pil_fmt in ("JPEG", "WEBP", "PNG"):
        kw["exif"] = img.exif
    if pil_fmt == "JPEG":
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif pil_fmt == "WEBP":
        kw.update(quality=quality, lossless=quality >= 100)
    elif pil_fmt == "TIFF":
        kw.update(compression="tiff_deflate")
    buf = io.BytesIO()
    pim.save(buf, format=pil_fmt, **kw)
    return buf.getvalue()


def write_image(path, img: ImageData, fmt: str = "png", quality: int = 95) -> Path:
    """Encode then write atomically: a temporary file in the same folder, then ``os.replace``."""
    return write_encoded(path, encode_image(img, fmt, quality))


def write_encoded(path, data: bytes) -> Path:
    """Write already-encoded image bytes atomically (the Ray driver writes what workers encoded)."""
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def is_complete_image(path) -> bool:
    """True when ``path`` is a non-empty file whose header an image reader accepts (used by
    --skip-existing, so a 0-byte or foreign leftover is redone, not counted as done)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.verify()
        return True
    except Image.DecompressionBombError:  # the header was read: a big image, not a broken one
        return True
    except Exception:
        return False


def with_pixels(img: ImageData, pixels: np.ndarray, alpha: np.ndarray | None) -> ImageData:
    """A copy of ``img``'s metadata with new pixel planes."""
    return replace(img, pixels=pixels, alpha=alpha)
