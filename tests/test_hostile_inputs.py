"""Hostile and careless input for `mambacsr-rt`, `python -m export.onnx` and `python -m export.quantize`.

Every file is made here (no binary blobs). Each case checks what a user relies on: the exit code,
one message naming the file or the flag and the fix, no traceback, no partial or temporary output,
the input untouched and, for the bombs, bounded memory. Issue 11's numbered items are marked
"item N".
"""

import functools
import hashlib
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.cli import main
from runtime.imageio import encode_png16, encode_tiff16, read_image
from test_runtime_cli import TINY, standin_onnx, tiny_ckpt, write_rgb  # noqa: F401 (tiny_ckpt: a fixture)

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------ helpers
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links not followed) with its bytes' hash and mtime."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        snap[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return snap


def assert_no_partial(folder: Path):
    """No temporary, hidden or empty files: every output is whole or absent."""
    if not folder.exists():
        return
    for p in folder.rglob("*"):
        assert not p.name.startswith("."), f"left-over temporary file {p}"
        if p.is_file():
            assert p.stat().st_size > 0, f"empty output {p}"
            read_image(p)  # every output reads back


def one_error_line(err: str, prog: str = "mambacsr-rt") -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:") and "Traceback" not in err, err
    return lines[0]


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


@functools.lru_cache(maxsize=None)
def zeros_zlib(megabytes: int) -> bytes:
    """A zlib stream of ``megabytes`` MB of zeros (about 1/1000 of that on disk)."""
    co = zlib.compressobj(9)
    return b"".join(co.compress(bytes(1 << 20)) for _ in range(megabytes)) + co.flush()


def png_zlib_bomb(w: int, h: int, depth: int, ctype: int, megabytes: int) -> bytes:
    """A valid small-header PNG whose IDAT stream inflates to ``megabytes`` MB of zeros."""
    z = zeros_zlib(megabytes)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + png_chunk(b"IDAT", z) + png_chunk(b"IEND", b""))


def png_header_bomb(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels, with almost no data."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def tiff16_zlib_bomb(megabytes: int) -> bytes:
    """A 64x64 16-bit RGB deflate TIFF whose only strip inflates to ``megabytes`` MB."""
    import io

    import tifffile
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64, 3), np.uint16), photometric="rgb", compression="zlib",
                     metadata=None, rowsperstrip=64)
    data = bytearray(buf.getvalue())
    z = zeros_zlib(megabytes)
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as t:
        tags = t.pages[0].tags
        offset_at, count_at = tags["StripOffsets"].valueoffset, tags["StripByteCounts"].valueoffset
    struct.pack_into("<I", data, offset_at, len(data))
    struct.pack_into("<I", data, count_at, len(z))
    return bytes(data) + z


@pytest.fixture(scope="module")
def dyn_onnx(tmp_path_factory):
    return standin_onnx(tmp_path_factory.mktemp("m") / "dyn.onnx")[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is opened: usage errors must come first."""
    import runtime.backends as backends

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")
    monkeypatch.setattr(backends, "open_backend", refuse)


# ------------------------------------------------------------------------------------ the corpus
GOOD = {  # name -> expected output (w, h) for a x2 model, or None to skip the size check
    "cmyk.jpg": (32, 24), "palette.png": (32, 24), "palette_alpha.png": (32, 24), "grey_alpha.png": (32, 24),
    "grey16.png": (32, 24), "bilevel.png": (32, 24), "rgb16.png": (32, 24), "rgba16.tiff": (32, 24),
    "animated.gif": (32, 24), "pages.tiff": (32, 24), "exif_rot6.jpg": (24, 32), "png_named.jpg": (32, 24),
    "фото 😀.png": (32, 24), "1x1.png": (2, 2), "libpng_bomb16.png": (128, 128),
}
BAD = {  # name -> what the message says
    "empty.png": "empty file", "text.png": "not an image", "trunc.png": "truncated", "trunc_jpeg.jpg": "truncated",
    "trunc16.png": "truncated", "header_bomb.png": "too many pixels", "zlib_bomb16.tiff": "truncated",
    "self_loop.png": "looping symbolic link", "dangling.png": "broken or looping symbolic link",
}


def make_corpus(d: Path) -> None:
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    im.convert("CMYK").save(d / "cmyk.jpg")
    im.quantize(16).save(d / "palette.png")
    im.quantize(16).save(d / "palette_alpha.png", transparency=0)
    im.convert("LA").save(d / "grey_alpha.png")
    Image.fromarray(rng.integers(0, 65536, (12, 16), dtype=np.uint16)).save(d / "grey16.png")
    im.convert("1").save(d / "bilevel.png")
    (d / "rgb16.png").write_bytes(encode_png16(rng.integers(0, 65536, (12, 16, 3)).astype(np.uint16)))
    (d / "rgba16.tiff").write_bytes(encode_tiff16(rng.integers(0, 65536, (12, 16, 4)).astype(np.uint16)))
    frames = [Image.fromarray(np.full((12, 16, 3), v, np.uint8)) for v in (0, 120, 240)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[0].save(d / "pages.tiff", save_all=True, append_images=frames[1:])
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(d / "exif_rot6.jpg", exif=exif.tobytes())
    im.save(d / "png_named.jpg", format="PNG")
    im.save(d / "фото 😀.png")
    Image.fromarray(rgb[:1, :1]).save(d / "1x1.png")
    (d / "libpng_bomb16.png").write_bytes(png_zlib_bomb(64, 64, 16, 2, 400))
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("I am not an image\n")
    good = (d / "palette.png").read_bytes()
    (d / "trunc.png").write_bytes(good[: len(good) // 2])
    (d / "trunc_jpeg.jpg").write_bytes((d / "exif_rot6.jpg").read_bytes()[:300])
    (d / "trunc16.png").write_bytes((d / "rgb16.png").read_bytes()[:200])
    (d / "header_bomb.png").write_bytes(png_header_bomb(100_000, 100_000))
    (d / "zlib_bomb16.tiff").write_bytes(tiff16_zlib_bomb(400))
    os.symlink("self_loop.png", d / "self_loop.png")
    os.symlink("missing.png", d / "dangling.png")
    os.symlink("..", d / "loop")  # a folder link back up: the scan must end, nothing twice
    (d / "notes.txt").write_text("not an image name: ignored")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile") / "in"
    make_corpus(d)
    return d


def test_corpus_each_file_handled_and_reported(tmp_path, capsys, corpus, dyn_onnx):
    before = snapshot(corpus)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "upscale", corpus, "-o", out, "--onnx", dyn_onnx)
    assert code == 1 and "Traceback" not in err
    for name, why in BAD.items():
        line = next((ln for ln in err.splitlines() if f"FAILED {corpus / name}:" in ln), None)
        assert line is not None and why in line, (name, err)
        assert not list(out.glob(Path(name).stem + ".*"))
    for name, size in GOOD.items():
        res = out / (Path(name).stem + ".png")
        assert res.is_file(), (name, err)
        assert read_image(res).size == size, name
        assert f"done {corpus / name} -> {res}" in err  # stderr is no terminal here: one line per file
    assert "animated.gif: note: 3 frames" in err and "pages.tiff: note: 3 frames" in err  # item 10
    assert "libpng_bomb16.png: note: libpng:" in err
    assert read_image(out / "rgb16.png").pixels.dtype == np.uint16 and read_image(out / "rgba16.png").alpha is not None
    assert not (out / "loop").exists()
    assert f"{len(GOOD)} file(s) written" in stdout and f"{len(BAD)} failed" in stdout
    assert_no_partial(out)
    assert snapshot(corpus) == before


def _max_rss_mb(argv: list[str]) -> tuple[int, float, str]:
    """Run the CLI in a fresh process; its exit code, its own peak RSS (MB) and stderr."""
    code = ("import resource, sys\nfrom runtime.cli import main\nrc = main(sys.argv[1:])\n"
            "sys.stderr.write(f'MAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\nsys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    kb = int(r.stderr.rsplit("MAXRSS ", 1)[1].split()[0])
    return r.returncode, kb / 1024, r.stderr


def test_bombs_keep_memory_bounded(tmp_path, dyn_onnx):
    """Item 2: zlib bombs (8- and 16-bit PNG, 16-bit TIFF) and a header bomb cost no more memory
    than one ordinary small image."""
    d = tmp_path / "bombs"
    d.mkdir()
    (d / "z16.png").write_bytes(png_zlib_bomb(64, 64, 16, 2, 400))
    (d / "z8.png").write_bytes(png_zlib_bomb(64, 64, 8, 2, 400))
    (d / "z16.tiff").write_bytes(tiff16_zlib_bomb(400))
    (d / "header.png").write_bytes(png_header_bomb(60_000, 60_000))
    base = tmp_path / "base"
    base.mkdir()
    write_rgb(base / "a.png", 64, 64)
    rc0, rss0, _ = _max_rss_mb(["upscale", base, "-o", tmp_path / "o0", "--onnx", dyn_onnx, "-q"])
    rc, rss, err = _max_rss_mb(["upscale", d, "-o", tmp_path / "o1", "--onnx", dyn_onnx, "-q"])
    assert rc0 == 0 and rc == 1, err
    assert "header.png: refused, too many pixels" in err and "Traceback" not in err
    assert rss - rss0 < 100, f"bombs took {rss:.0f} MB vs {rss0:.0f} MB for a plain image"


# ------------------------------------------------------------------------------------ item 1
@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_output_folder_at_or_above_the_input_folder(tmp_path, capsys, monkeypatch, dyn_onnx, where):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_rgb(photos / "a.jpg")
    (photos / "b").mkdir()
    write_rgb(photos / "b" / "c.jpg", seed=1)
    if where == "cwd":
        monkeypatch.chdir(tmp_path)
        code, stdout, err = run(capsys, "upscale", "photos", "-o", ".", "--onnx", dyn_onnx, "-q")
    else:
        code, stdout, err = run(capsys, "upscale", photos, "-o", tmp_path, "--onnx", dyn_onnx, "-q")
    assert code == 0, err
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b" / "c.png").is_file()
    assert "2 file(s) written" in stdout


# ------------------------------------------------------------------------------------ item 3
def test_exporter_checks_out_before_exporting(tmp_path, capsys, monkeypatch, tiny_ckpt):
    import export.onnx as ex

    def never(*a, **k):
        raise AssertionError("the export ran before --out was checked")
    monkeypatch.setattr(ex, "export_model", never)
    monkeypatch.setattr("mambacsr.load_model", never)
    (tmp_path / "dir.onnx").mkdir()
    blocker = tmp_path / "plainfile"
    blocker.write_text("x")
    cases = {tmp_path / "dir.onnx": "is a folder", blocker / "new" / "m.onnx": "is a file",
             tmp_path / "m.txt": "must end in .onnx"}
    if not IS_ROOT:  # root writes anywhere: a read-only folder only stops other users
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases[ro / "new" / "m.onnx"] = "cannot create files"
    for out, needle in cases.items():
        code = ex.main(["--ckpt", str(tiny_ckpt), "--out", str(out), "--tile", "16"])
        line = one_error_line(capsys.readouterr().err, "python -m export.onnx")
        assert code == 2 and needle in line and str(out) in line
    assert (tmp_path / "dir.onnx").is_dir() and not list((tmp_path / "dir.onnx").iterdir())
    assert not (tmp_path / "ro" / "new").exists()


# ------------------------------------------------------------------------------------ item 4 (and 10)
@pytest.mark.parametrize("argv,needle", [
    (["-o", "BLOCKED/out"], "is a file, so nothing can be created under it"),
    (["-o", "OUT", "-f", "webp", "--quality", "0"], "--quality: 0 is out of range"),
    (["-o", "OUT", "-f", "jpg", "--quality", "101"], "--quality: 101 is out of range"),
    (["-o", "OUT", "--quality", "80"], "--quality applies to jpg and webp"),
    (["-o", "OUT", "--tile", "0"], "--tile: 0 is out of range"),
    (["-o", "OUT", "-t", "7"], "use an integer >= 16"),
    (["-o", "OUT", "--batch", "0"], "--batch: 0 is out of range"),
    (["-o", "OUT", "--batch", "-2"], "--batch: -2 is out of range"),
    (["-o", "OUT", "--threads", "-1"], "--threads: -1 is out of range"),
    (["-o", "OUT", "--threads", "two"], "'two' is not an integer"),
    (["-o", "OUT", "--tile", "32", "--overlap", "32"], "--overlap 32 must be smaller than --tile 32"),
    (["-o", "OUT", "--tile-mode", "official", "--tile", "32"], "would ignore --tile"),
    (["-o", "OUT", "--tile-mode", "official", "--overlap", "4"], "would ignore --overlap"),
    (["-o", "OUT", "-s", "0"], "--outscale: 0 is out of range"),
    (["-o", "OUT", "--suffix", "a/b"], "path separator"),
    (["-o", "OUT/x.png", "-f", "jpg"], "drop --format"),
    (["-o", "IN/a.png"], "is the input file itself"),
    (["SECOND", "-o", "OUT/x.png"], "names one output file"),
    (["-o", "OUT", "--tile-mode", "fast"], "invalid choice: 'fast'"),
])
def test_options_checked_before_any_model_is_loaded(tmp_path, capsys, no_model, argv, needle):
    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "a.png")
    write_rgb(src / "b.png", seed=1)
    (tmp_path / "blocked").write_text("a file where a folder should be")
    sub = {"OUT": str(tmp_path / "out"), "IN": str(src), "BLOCKED": str(tmp_path / "blocked"),
           "SECOND": str(src / "b.png")}
    argv = [next((v + a[len(k):] for k, v in sub.items() if a.startswith(k)), a) for a in argv]
    before = snapshot(src)
    code, _, err = run(capsys, "upscale", src / "a.png", *argv)
    line = one_error_line(err)
    assert code == 2 and needle in line, line
    assert not (tmp_path / "out").exists()
    assert snapshot(src) == before


@pytest.mark.skipif(IS_ROOT, reason="root can write into a read-only folder")
def test_read_only_output_folder_before_model(tmp_path, capsys, no_model):
    write_rgb(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", ro / "sub")
    assert code == 2 and "cannot create files in" in one_error_line(err)


def test_skip_existing_redoes_empty_outputs(tmp_path, capsys, dyn_onnx):
    """Item 10: a 0-byte (or foreign, unreadable) output is not 'done'."""
    write_rgb(tmp_path / "a.png")
    write_rgb(tmp_path / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"")
    code, _, _ = run(capsys, "upscale", tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--onnx", dyn_onnx, "-q")
    assert code == 0 and read_image(out / "a.png").size == (56, 40)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a leftover: header only
    code, stdout, _ = run(capsys, "upscale", tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--onnx", dyn_onnx,
                          "--skip-existing", "-q")
    assert code == 0 and "1 skipped" in stdout and (out / "a.png").stat().st_mtime_ns == mtimes["a.png"]
    assert read_image(out / "b.png").size == (56, 40)


# ------------------------------------------------------------------------------------ item 5 (and 9)
def test_tiny_images_keep_their_colours_with_the_default_model(tmp_path, capsys):
    from mambacsr.pretrained import load_default_model
    one = np.array([[[206, 197, 252]]], np.uint8)
    grad = np.stack([np.linspace(0, 255, 6).reshape(3, 2)] * 3, -1).round().astype(np.uint8)
    Image.fromarray(one).save(tmp_path / "one.png")
    Image.fromarray(grad).save(tmp_path / "grad.png")
    code, _, err = run(capsys, "upscale", tmp_path / "one.png", tmp_path / "grad.png", "-o", tmp_path / "o")
    assert code == 0, err
    # the same colour in a 32x32 image: what the model makes of it away from any border
    with torch.no_grad():
        flat = torch.from_numpy(np.broadcast_to(one.reshape(3, 1, 1) / 255.0, (3, 32, 32)).astype(np.float32))
        ref = load_default_model()(flat[None])[0, :, 60:68, 60:68].mean((1, 2)).numpy() * 255
    got = read_image(tmp_path / "o" / "one.png").pixels.reshape(-1, 3).mean(0)
    assert np.abs(got - ref).max() < 8, (got, ref)
    g = read_image(tmp_path / "o" / "grad.png").pixels
    # not squashed: the defect flattened the ramp to a few levels; the model itself smooths its
    # 0..255 ends (the shipped model spans about 210 levels here)
    assert g.shape == (12, 8, 3) and int(g.max()) - int(g.min()) >= 190
    # item 9: honest log lines
    assert "backend: torch (the shipped default model is a checkpoint)" in err
    assert "tiles up to 64x64" in err and "1 tile(s) of 16x16" in err


# ------------------------------------------------------------------------------------ item 6
def test_unreadable_folders_are_reported(tmp_path, capsys, monkeypatch, dyn_onnx):
    top = tmp_path / "in"
    (top / "locked").mkdir(parents=True)
    write_rgb(top / "a.png")
    write_rgb(top / "locked" / "b.png")
    real_scandir = os.scandir
    blocked = {str(top / "locked")}

    def scandir(path="."):  # what a chmod 000 folder does for a non-root user
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    code, stdout, err = run(capsys, "upscale", top, "-o", tmp_path / "out", "--onnx", dyn_onnx, "-q")
    assert code == 1 and f"FAILED {top / 'locked'}: cannot read this folder (Permission denied)" in err
    assert (tmp_path / "out" / "a.png").is_file() and "1 file(s) written" in stdout
    blocked.add(str(top))
    code, _, err = run(capsys, "upscale", top, "-o", tmp_path / "out2", "--onnx", dyn_onnx, "-q")
    assert code == 1 and f"FAILED {top}: cannot read this folder" in err
    assert "no input images found" not in err


@pytest.mark.skipif(IS_ROOT, reason="root reads every folder")
def test_unreadable_folder_for_real(tmp_path, capsys, dyn_onnx):
    (tmp_path / "in" / "locked").mkdir(parents=True)
    write_rgb(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "locked").chmod(0)
    try:
        code, _, err = run(capsys, "upscale", tmp_path / "in", "-o", tmp_path / "out", "--onnx", dyn_onnx, "-q")
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    assert code == 1 and "locked: cannot read this folder" in err


# ------------------------------------------------------------------------------------ items 7 and 9
@pytest.fixture(scope="module")
def tiny_fp32_onnx(tmp_path_factory):
    from export.onnx import export_model
    from mambacsr import MambaCSR
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return export_model(MambaCSR(**TINY).eval(), tmp_path_factory.mktemp("q") / "fp32.onnx", tile=16)


def test_quantize_garbage_onnx_and_bad_calibration_images(tmp_path, tiny_fp32_onnx):
    calib = tmp_path / "calib"
    calib.mkdir()
    write_rgb(calib / "good.png", 40, 40)
    (calib / "bomb.png").write_bytes(png_header_bomb(60_000, 60_000))
    (calib / "text.jpg").write_text("not a picture")
    cli = [sys.executable, "-m", "export.quantize"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(random.Random(0).randbytes(4000))
    r = subprocess.run(cli + ["--onnx", garbage, "--calib", calib, "--out", tmp_path / "q.onnx"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a readable ONNX model" in one_error_line(r.stderr, "python -m export.quantize")
    r = subprocess.run(cli + ["--onnx", tiny_fp32_onnx, "--calib", calib, "--out", tmp_path / "q.onnx",
                              "--max-tiles", "2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()  # item 9: the two skipped images and nothing else
    assert len(lines) == 2 and "Traceback" not in r.stderr, r.stderr
    assert any("bomb.png: refused, too many pixels" in ln for ln in lines)
    assert any("text.jpg: not an image" in ln for ln in lines)
    assert r.stdout.strip().splitlines() == [r.stdout.strip()] and "QuantizeLinear" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "garbage.onnx", "q.onnx"]


def test_exporter_prints_only_its_summary(tmp_path, tiny_ckpt):
    r = subprocess.run([sys.executable, "-m", "export.onnx", "--ckpt", tiny_ckpt, "--out", tmp_path / "m.onnx",
                        "--tile", "16"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # item 9: no FutureWarning from torch
    assert "SelectiveScan" in r.stdout


# ------------------------------------------------------------------------------------ item 8
def test_random_bytes_checkpoint(tmp_path, capsys):
    write_rgb(tmp_path / "a.png")
    ck = tmp_path / "random.pth"
    ck.write_bytes(b"\x13" + random.Random(0).randbytes(5000))
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--ckpt", ck, "-q")
    line = one_error_line(err)
    assert code == 2 and f"{ck} is not a PyTorch checkpoint" in line
    assert "execute code" not in line and "--config/--preset" not in line and line.endswith("file")
    # Looks like a pickle, is not one. Seeded, so every run sees the same bytes; seed 502's bytes
    # make torch.load warn about a "pickle protocol 191" before failing: still one error line.
    for seed in (0, 1, 502):
        ck.write_bytes(b"\x80\x02" + random.Random(seed).randbytes(5000))
        code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--ckpt", ck, "-q")
        line = one_error_line(err)
        assert code == 2 and "execute code" not in line and "--config/--preset" not in line and "Re-download" in line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ item 9
def test_pillow_bomb_warning_becomes_one_refusal(tmp_path, capsys, monkeypatch, dyn_onnx):
    write_rgb(tmp_path / "big.png", 40, 40)  # 1600 pixels: over a 1000-pixel limit, under twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    code, _, err = run(capsys, "upscale", tmp_path / "big.png", "-o", tmp_path / "o", "--onnx", dyn_onnx, "-q")
    assert code == 1 and f"FAILED {tmp_path / 'big.png'}: refused, too many pixels" in err
    assert "1,600 pixels is over the 1,000-pixel" in err
    assert "DecompressionBombWarning" not in err and "mambacsr-rt: warning" not in err


def test_a_warning_said_twice_by_a_library_is_heard_once(tmp_path, tiny_ckpt):
    """The CPU scan kernel without a compiler both logs and warns: one line reaches the user."""
    write_rgb(tmp_path / "a.png", 16, 16)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "MAMBACSR_SCAN")}
    env.update(PATH=str(tmp_path / "no-bin"), MAMBACSR_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "runtime", "upscale", tmp_path / "a.png", "-o", tmp_path / "o",
                        "--ckpt", tiny_ckpt, "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "kernel is unavailable" in ln]
    assert len(lines) == 1 and lines[0].startswith("mambacsr-rt: warning:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_non_terminal_progress_is_one_line_per_file_as_it_happens(tmp_path, dyn_onnx):
    for i in range(3):
        write_rgb(tmp_path / f"p{i}.png", 20, 28, seed=i)
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "upscale", *[tmp_path / f"p{i}.png" for i in range(3)],
                             "-o", tmp_path / "o", "--onnx", dyn_onnx], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = ""
    while " done " not in first:  # the first file's line arrives before the process ends
        first = proc.stderr.readline()
        assert first, "stderr closed before any per-file line"
    rest = proc.stderr.read()
    assert proc.wait(60) == 0
    done = [first] + [ln for ln in rest.splitlines() if " done " in ln]
    assert len(done) == 3
    for i, line in enumerate(done):
        assert f"p{i}.png -> " in line and "28x20 -> 56x40" in line and line.strip().endswith(" s")
    assert "\r" not in rest  # no progress bars in a log file


# ------------------------------------------------------------------------------------ item 10
def test_official_mode_refuses_tile(tmp_path, capsys, no_model):
    write_rgb(tmp_path / "a.png")
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--tile-mode", "official",
                       "-t", "64")
    assert code == 2 and "would ignore --tile" in one_error_line(err)


# ------------------------------------------------------------------------------------ item 11
def test_16bit_png_is_decoded_by_libpng_in_one_call(tmp_path, monkeypatch):
    # What keeps a large 16-bit PNG fast is that libpng (imagecodecs) decodes it whole, once: checked
    # by counting the calls, not by a timer that a loaded machine could trip.
    import imagecodecs
    a = np.random.default_rng(0).integers(0, 65536, (768, 768, 3)).astype(np.uint16)
    (tmp_path / "big16.png").write_bytes(imagecodecs.png_encode(a, filter=imagecodecs.PNG.FILTER.PAETH))
    calls = []
    real = imagecodecs.png_decode
    monkeypatch.setattr(imagecodecs, "png_decode", lambda data, *k, **kw: calls.append(len(data)) or real(data, *k, **kw))
    img = read_image(tmp_path / "big16.png")
    assert calls == [(tmp_path / "big16.png").stat().st_size]
    np.testing.assert_array_equal(img.pixels, a)


# ------------------------------------------------------------------------------------ safety
def test_output_is_input(tmp_path, capsys, dyn_onnx):
    write_rgb(tmp_path / "a.png")
    write_rgb(tmp_path / "b.jpg", seed=1)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "upscale", tmp_path, "-o", tmp_path, "--onnx", dyn_onnx, "-q")
    assert code == 1 and f"FAILED {tmp_path / 'a.png'}: its output {tmp_path / 'a.png'} would overwrite" in err
    assert (tmp_path / "b.png").is_file()  # the other input went on
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "b.png"} == before
    assert_no_partial(tmp_path)


def test_interrupt_leaves_whole_outputs_only(tmp_path, dyn_onnx):
    src = tmp_path / "in"
    src.mkdir()
    n = 60  # enough work (~0.1 s per file here) that SIGINT always lands mid-run
    for i in range(n):
        write_rgb(src / f"p{i}.png", 200, 200, seed=i)
    before = snapshot(src)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "upscale", src, "-o", out, "--onnx", dyn_onnx,
                             "-t", "16", "--tta"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            # a shell's background job ignores SIGINT and children inherit that: the
                            # user's Ctrl-C reaches the tool with the default action
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = ""
    while " done " not in line:
        line = proc.stderr.readline()
        assert line, "no file finished"
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(60) == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= len(written) < n
    assert_no_partial(out)
    assert snapshot(src) == before


# ------------------------------------------------------------------------------------ new flags
def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("mambacsr-rt 0.")


def test_real_esrgan_style_flags(tmp_path, capsys, dyn_onnx):
    write_rgb(tmp_path / "a.png", 20, 28)
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--onnx", dyn_onnx, "-t", "16",
                       "-s", "3", "--suffix", "x3", "-f", "jpg", "--quality", "90", "-q")
    assert code == 0, err
    res = read_image(tmp_path / "o" / "a_x3.jpg")
    assert res.size == (84, 60) and Image.open(tmp_path / "o" / "a_x3.jpg").format == "JPEG"
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "single" / "big.webp", "--onnx",
                       dyn_onnx, "-s", "1.5", "-q")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "single")) == ["big.webp"]
    assert read_image(tmp_path / "single" / "big.webp").size == (42, 30)


def test_unicode_paths_and_wrong_extension(tmp_path, capsys, dyn_onnx):
    d = tmp_path / "ünïcødé 写真"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "really a png.jpg", format="PNG")
    code, _, err = run(capsys, "upscale", d, "-o", d / "出力", "--onnx", dyn_onnx, "-q")
    assert code == 0, err
    assert read_image(d / "出力" / "really a png.png").size == (16, 16)


def test_library_log_records_do_not_leak_raw(tmp_path, capsys, monkeypatch, dyn_onnx):
    """A library's multi-line log warning reaches the user as one prefixed line."""
    import runtime.backends as backends
    real = backends.open_backend

    def noisy(*a, **k):
        logging.getLogger("tifffile").warning("first line\nsecond line")
        return real(*a, **k)
    monkeypatch.setattr(backends, "open_backend", noisy)
    write_rgb(tmp_path / "a.png")
    code, _, err = run(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--onnx", dyn_onnx, "-q")
    assert code == 0 and "mambacsr-rt: warning: first line" in err and "second line" not in err
