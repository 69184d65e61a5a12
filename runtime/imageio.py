"""Image I/O for the runtime (Pillow-based).

``read_image`` returns an :class:`ImageData`: pixels (H, W, 1|3) uint8 or uint16, an optional
alpha plane of the same depth, the ICC profile and the EXIF block (orientation already applied to
the pixels and removed from the EXIF). Palette, CMYK, YCbCr, LAB, HSV, 1-bit and 32-bit modes are
converted. 16-bit in gives 16-bit out (PNG, TIFF). Pillow has no 16-bit colour mode, so 16-bit
PNGs go through a small PNG codec here and 16-bit colour TIFFs through ``tifffile`` when
installed (uncompressed ones are read directly otherwise); they are written by small writers here.
Pillow's decompression-bomb guard stays on (``Image.open`` checks the size first).

``write_image`` writes atomically (temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from mambacsr.atomic import atomic_write
from runtime.errors import ImageError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}
EXTENSIONS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm",
                  ".pgm", ".pnm", ".tga"}
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
    info: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def gray(self) -> bool:
        return self.pixels.shape[2] == 1

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


# ---------------------------------------------------------------------------------------- 16-bit PNG
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != PNG_SIG or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _unfilter_slow(ft: int, cur: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    a = cur.astype(np.int32)
    p = prev.astype(np.int32)
    r = np.zeros_like(a)
    n = a.size
    if ft == 3:  # average
        r[:bpp] = (a[:bpp] + (p[:bpp] >> 1)) & 255
        for x in range(bpp, n, bpp):
            r[x:x + bpp] = (a[x:x + bpp] + ((r[x - bpp:x] + p[x:x + bpp]) >> 1)) & 255
    else:  # paeth
        r[:bpp] = (a[:bpp] + p[:bpp]) & 255
        for x in range(bpp, n, bpp):
            left, up, ul = r[x - bpp:x], p[x:x + bpp], p[x - bpp:x]
            est = left + up - ul
            pa, pb, pc = np.abs(est - left), np.abs(est - up), np.abs(est - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
            r[x:x + bpp] = (a[x:x + bpp] + pred) & 255
    return r.astype(np.uint8)


def read_png16(path: Path) -> tuple[np.ndarray, int]:
    """Decode a 16-bit PNG to (H, W, channels) uint16. Returns (array, channels)."""
    data = Path(path).read_bytes()
    if data[:8] != PNG_SIG:
        raise ImageError("not a PNG file")
    pos, idat, ihdr, ended = 8, [], None, False
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8: pos + 8 + length]
        if len(body) < length:
            raise ImageError("truncated PNG")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            ended = True
            break
        pos += 12 + length
    if ihdr is None or not idat or not ended:
        raise ImageError("truncated PNG (missing IHDR/IDAT/IEND)")
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 16 or ctype not in _PNG_CHANNELS:
        raise ImageError(f"unsupported PNG layout (depth {depth}, colour type {ctype})")
    if interlace:
        raise ImageError("interlaced 16-bit PNG is not supported: re-save it without interlacing")
    ch = _PNG_CHANNELS[ctype]
    bpp, stride = ch * 2, w * ch * 2
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ImageError(f"corrupt PNG data ({e})") from None
    if len(raw) < h * (stride + 1):
        raise ImageError("truncated PNG image data")
    rows = np.frombuffer(raw, np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        ft, cur = int(rows[y, 0]), rows[y, 1:]
        if ft == 0:
            rec = cur
        elif ft == 1:
            rec = np.cumsum(cur.reshape(w, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif ft == 2:
            rec = cur + prev
        elif ft in (3, 4):
            rec = _unfilter_slow(ft, cur, prev, bpp)
        else:
            raise ImageError(f"corrupt PNG (filter type {ft})")
        out[y] = rec
        prev = out[y]
    return out.view(">u2").reshape(h, w, ch).astype(np.uint16), ch


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def encode_png16(a: np.ndarray, icc: bytes | None = None) -> bytes:
    """Encode (H, W, C) uint16, C in 1..4, as a 16-bit PNG (Sub filter, zlib level 6)."""
    h, w, ch = a.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    bpp = ch * 2
    raw = np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * bpp)
    filt = raw.copy()
    filt[:, bpp:] = raw[:, bpp:] - raw[:, :-bpp]
    body = np.concatenate([np.ones((h, 1), np.uint8), filt], axis=1).tobytes()
    parts = [PNG_SIG, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))]
    if icc:
        parts.append(_png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    parts += [_png_chunk(b"IDAT", zlib.compress(body, 6)), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


# ---------------------------------------------------------------------------------------- 16-bit TIFF
def encode_tiff16(a: np.ndarray, icc: bytes | None = None) -> bytes:
    """Encode (H, W, C) uint16 as an uncompressed little-endian baseline TIFF (one strip)."""
    if a.shape[2] == 2:  # Pillow cannot open 16-bit grey+alpha TIFFs: store it as RGBA
        a = np.concatenate([a[:, :, :1]] * 3 + [a[:, :, 1:]], axis=2)
    h, w, ch = a.shape
    pix = np.ascontiguousarray(a.astype("<u2")).tobytes()
    entries = []  # (tag, type, count, payload bytes)
    SHORT, LONG, UNDEF = 3, 4, 7
    entries.append((256, LONG, 1, struct.pack("<I", w)))
    entries.append((257, LONG, 1, struct.pack("<I", h)))
    entries.append((258, SHORT, ch, struct.pack(f"<{ch}H", *([16] * ch))))
    entries.append((259, SHORT, 1, struct.pack("<H", 1)))
    entries.append((262, SHORT, 1, struct.pack("<H", 2 if ch >= 3 else 1)))
    entries.append((273, LONG, 1, None))  # strip offset, patched below
    entries.append((277, SHORT, 1, struct.pack("<H", ch)))
    entries.append((278, LONG, 1, struct.pack("<I", h)))
    entries.append((279, LONG, 1, struct.pack("<I", len(pix))))
    entries.append((284, SHORT, 1, struct.pack("<H", 1)))
    if ch in (2, 4):
        entries.append((338, SHORT, 1, struct.pack("<H", 2)))  # unassociated alpha
    if icc:
        entries.append((34675, UNDEF, len(icc), icc))
    ifd_off = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_off = ifd_off + ifd_size
    extra = b""
    blobs = {}
    for tag, typ, count, payload in entries:
        if payload is not None and len(payload) > 4:
            blobs[tag] = extra_off + len(extra)
            extra += payload + (b"\x00" if len(payload) % 2 else b"")
    pix_off = extra_off + len(extra)
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, payload in entries:
        if tag == 273:
            payload = struct.pack("<I", pix_off)
        if len(payload) > 4:
            value = struct.pack("<I", blobs[tag])
        else:
            value = payload.ljust(4, b"\x00")
        ifd += struct.pack("<HHI", tag, typ, count) + value
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_off) + ifd + extra + pix


def _read_tiff16_color(path: Path, im: Image.Image) -> np.ndarray:
    try:
        import tifffile  # optional, handles compressed TIFFs
    except ImportError:
        tifffile = None
    if tifffile is not None:
        a = tifffile.imread(str(path), key=0)
        if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):  # planar
            a = np.moveaxis(a, 0, -1)
        return a.astype(np.uint16)
    ch = len(im.mode)
    out = np.empty((im.height, im.width, ch), np.uint16)
    with open(path, "rb") as f:
        for t in im.tile:
            rawmode = t.args[0] if isinstance(t.args, tuple) else t.args
            if t.codec_name != "raw" or ";16" not in rawmode:
                raise ImageError("compressed 16-bit colour TIFF: `pip install tifffile` to read it")
            x0, y0, x1, y1 = t.extents
            dt = ">u2" if rawmode.endswith("B") else "<u2"
            f.seek(t.offset)
            n = (x1 - x0) * (y1 - y0) * ch
            buf = f.read(n * 2)
            if len(buf) < n * 2:
                raise ImageError("truncated TIFF")
            out[y0:y1, x0:x1] = np.frombuffer(buf, dt).reshape(y1 - y0, x1 - x0, ch)
    return out


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
            except Exception:
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
        f = np.asarray(im, dtype=np.float32)
        if np.nanmax(f) <= 1.0:
            return np.rint(np.clip(f, 0, 1) * 65535).astype(np.uint16)[:, :, None], None, icc
        return np.rint(np.clip(f, 0, 255)).astype(np.uint8)[:, :, None], None, icc
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.mode else "RGB")
    px, alpha = _split_alpha(np.asarray(im))
    return px, alpha, icc


def read_image(path) -> ImageData:
    """Read one image; raises ImageError (one line, no traceback needed) on any problem."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError("not a file")
        if path.stat().st_size == 0:
            raise ImageError("empty file")
        with Image.open(path) as im:  # checks the decompression-bomb limit
            fmt = im.format
            icc = im.info.get("icc_profile") or None
            exif_obj = im.getexif()
            orientation = int(exif_obj.get(ORIENTATION, 1) or 1)
            exif = None
            if len(exif_obj):
                if ORIENTATION in exif_obj:
                    del exif_obj[ORIENTATION]
                exif = exif_obj.tobytes() if len(exif_obj) else None
            if fmt == "PNG" and (_png_header(path) or (0, 0))[0] == 16:
                a, _ = read_png16(path)
                px, alpha = _split_alpha(a)
            elif fmt == "TIFF" and im.mode in ("RGB", "RGBA") and 16 in tuple(im.tag_v2.get(258, (8,)) or (8,)):
                px, alpha = _split_alpha(_read_tiff16_color(path, im))
            else:
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                im.load()
                px, alpha, icc = _from_pil(im, icc)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or an unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, IndexError) as e:
        raise ImageError(f"{path}: unreadable or truncated ({e})") from None
    if px.shape[0] == 0 or px.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    if orientation != 1:
        px = apply_orientation(px, orientation)
        alpha = apply_orientation(alpha, orientation) if alpha is not None else None
    return ImageData(px, alpha, icc, exif, fmt)


# ---------------------------------------------------------------------------------------- writing
def normalize_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    if f not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: use png, jpg, webp or tiff")
    return f


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
    path = Path(path)
    data = encode_image(img, fmt, quality)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def with_pixels(img: ImageData, pixels: np.ndarray, alpha: np.ndarray | None) -> ImageData:
    """A copy of ``img``'s metadata with new pixel planes."""
    return replace(img, pixels=pixels, alpha=alpha)
