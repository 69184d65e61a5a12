"""mambacsr-rt: upscale / build / bench.

Exit codes: 0 all good, 1 some inputs failed, 2 usage or configuration error (one line, no
traceback).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from runtime.errors import ImageError, UserError

PROG = "mambacsr-rt"


def _log(msg: str) -> None:
    try:
        from tqdm import tqdm
        tqdm.write(f"{PROG}: {msg}", file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(f"{PROG}: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------------- arguments
def _add_model_args(p: argparse.ArgumentParser, lists: bool = False) -> None:
    g = p.add_argument_group("model (one of; none: the shipped default model)")
    g.add_argument("--engine", help="TensorRT engine (.engine) built by `mambacsr-rt build`")
    g.add_argument("--plugin", help="TensorRT plugin library (libmambacsr_plugins.so)")
    g.add_argument("--onnx", help="exported ONNX model")
    g.add_argument("--ckpt", help="PyTorch checkpoint (.pth official or .safetensors)")
    g.add_argument("--config", help="network_g config for --ckpt: YAML file (official option file)")
    g.add_argument("--preset", help="named config preset for --ckpt")
    r = p.add_argument_group("runtime")
    if lists:
        r.add_argument("--backend", default="auto", help="comma list of auto|trt|ort|torch (default auto)")
        r.add_argument("--precision", default="fp32", help="comma list of fp32|fp16 (default fp32)")
        r.add_argument("--tile", default="64", help="comma list of LR tile sizes (default 64)")
        r.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    else:
        r.add_argument("--backend", default="auto", choices=["auto", "trt", "ort", "torch"],
                       help="auto picks by model: engine->trt, onnx->ort, ckpt->torch (logged)")
        r.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
        r.add_argument("--tile", type=int, default=None,
                       help="LR tile size (default: the engine's, else chosen from free memory; 64 on CPU)")
        r.add_argument("--batch", type=int, default=None, help="tiles per model call (default: auto)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch/onnxruntime")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="MambaCSR tiled super-resolution runtime")
    sub = ap.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("upscale", help="upscale images, folders or globs")
    up.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    up.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    up.add_argument("--format", default="png", choices=["png", "jpg", "webp", "tiff"],
                    help="output format (default png; 16-bit inputs stay 16-bit in png/tiff)")
    up.add_argument("--quality", type=int, default=95, help="jpg/webp quality (default 95; webp 100 = lossless)")
    _add_model_args(up)
    up.add_argument("--overlap", type=int, default=None, help="LR pixels shared by tiles (default tile/8)")
    up.add_argument("--tile-mode", default="blend", choices=["blend", "official"],
                    help="blend: fixed tiles, feathered merge; official: the official test partitioning")
    up.add_argument("--blend", default="sine", choices=["sine", "linear"], help="blend window (default sine)")
    up.add_argument("--tta", action="store_true", help="x8 flip/transpose self-ensemble (8x slower)")
    up.add_argument("--skip-existing", action="store_true", help="skip inputs whose output exists")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")

    b = sub.add_parser("build", help="build and cache a TensorRT engine from an ONNX file")
    b.add_argument("--onnx", required=True)
    b.add_argument("--plugin", help="libmambacsr_plugins.so (needed for SelectiveScan nodes)")
    b.add_argument("--tile", type=int, default=None, help="LR tile (default: the ONNX's)")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    b.add_argument("--cache-dir", default=None, help="engine cache (default ~/.cache/mambacsr/engines)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--workspace", type=float, default=4.0, help="builder workspace GiB (default 4)")

    be = sub.add_parser("bench", help="latency/throughput per backend, precision, tile and batch")
    _add_model_args(be, lists=True)
    be.add_argument("--iters", type=int, default=5)
    be.add_argument("--warmup", type=int, default=1)
    return ap


# ----------------------------------------------------------------------------------- inputs
def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    root = []
    for p in parts:
        if _has_magic(p):
            break
        root.append(p)
    return Path(*root) if root else Path(".")


def _is_image_name(p: Path) -> bool:
    from runtime.imageio import IMAGE_SUFFIXES
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def collect_inputs(inputs: list[str], exclude: Path | None = None
                   ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand files/folders/globs into (file, relative output stem) pairs, plus missing ones.

    Folder scans skip ``exclude`` (the output folder), so re-running into a sub-folder of the
    input does not upscale earlier outputs.
    """
    skip = exclude.resolve() if exclude is not None else None
    items: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    seen: set = set()

    def add(f: Path, rel: Path):
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            items.append((f, rel))

    def add_dir(d: Path):
        for f in sorted(d.rglob("*")):
            if f.is_file() and _is_image_name(f) and not any(x.startswith(".") for x in f.relative_to(d).parts):
                if skip is not None and f.resolve().is_relative_to(skip):
                    continue
                add(f, f.relative_to(d).with_suffix(""))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            add_dir(p)
        elif p.exists():
            add(p, Path(p.stem))
        elif _has_magic(arg):
            root = _glob_root(arg)
            hits = sorted(glob.glob(arg, recursive=True))
            if not hits:
                missing.append((arg, "no file matches"))
            for h in map(Path, hits):
                if h.is_dir():
                    add_dir(h)
                elif h.is_file():
                    try:
                        rel = h.relative_to(root).with_suffix("")
                    except ValueError:
                        rel = Path(h.stem)
                    add(h, rel)
        else:
            missing.append((arg, "no such file or folder"))
    return items, missing


# ----------------------------------------------------------------------------------- upscale
def _open(args, tile=None, batch=None, backend=None, precision=None, log=_log):
    from runtime.backends import open_backend
    config = args.config or args.preset
    return open_backend(backend or args.backend, engine=args.engine, plugin=args.plugin, onnx=args.onnx,
                        ckpt=args.ckpt, config=config, device=args.device,
                        precision=precision or args.precision, tile=tile, batch=batch,
                        threads=args.threads, log=log)


def _make_tiler(args, backend):
    from runtime.tiling import Tiler, auto_tile
    batch = args.batch
    if args.tile_mode == "official":
        if backend.fixed_tile is not None:
            raise UserError("--tile-mode official needs a model that accepts any size: use --ckpt (torch) or "
                            "an ONNX with dynamic height/width, not a fixed-tile model")
        return Tiler(backend.scale, None, mode="official", batch=batch or 1, multiple=backend.size_multiple)
    if backend.fixed_tile is not None:
        th, tw = backend.fixed_tile
        if args.tile and args.tile != th:
            raise UserError(f"this model takes {th}x{tw} tiles: drop --tile or pass --tile {th} "
                            f"(or build/export another tile size)")
        tile = (th, tw)
        batch = batch or backend.max_batch or 1
    else:
        free = backend.free_memory()
        t, b = auto_tile(free, backend.bytes_per_lr_pixel, backend.size_multiple, batch)
        tile = args.tile or t
        batch = batch or (b if free else 1)
        if backend.max_batch:
            batch = min(batch, backend.max_batch)
    t0 = tile[0] if isinstance(tile, tuple) else tile
    overlap = args.overlap if args.overlap is not None else max(0, t0 // 8)
    return Tiler(backend.scale, tile, overlap=overlap, mode="blend", batch=batch,
                 fixed=backend.fixed_tile is not None, multiple=backend.size_multiple, window=args.blend)


def cmd_upscale(args) -> int:
    from tqdm import tqdm

    from runtime.imageio import EXTENSIONS, read_image, write_image
    from runtime.upscale import Upscaler

    log = (lambda m: None) if args.quiet else _log
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"-o {outdir} is a file: pass a folder")
    items, missing = collect_inputs(args.inputs, exclude=outdir)
    failures: list[tuple[str, str]] = list(missing)
    for name, why in missing:
        _log(f"FAILED {name}: {why}")
    if not items:
        _log("nothing to do: no input images found")
        return 1

    backend = _open(args, tile=args.tile, batch=args.batch, log=log)
    tiler = _make_tiler(args, backend)
    if tiler.mode == "blend":
        log(f"{backend.describe()}; tiles {tiler.tile[0]}x{tiler.tile[1]}, overlap {tiler.overlap}, "
            f"batch {tiler.batch}{', x8 TTA' if args.tta else ''}")
    else:
        log(f"{backend.describe()}; official partitioning{', x8 TTA' if args.tta else ''}")
    up = Upscaler(backend, tiler, tta=args.tta)

    ext = EXTENSIONS[args.format]
    input_keys = {f.resolve() for f, _ in items}
    produced: dict[Path, Path] = {}
    done = skipped = 0
    out_pixels = 0
    t_start = time.perf_counter()
    bars = not args.quiet
    file_bar = tqdm(items, desc="files", unit="file", disable=None if bars else True, file=sys.stderr)
    for src, rel in file_bar:
        dst = outdir / rel.parent / (rel.name + ext)
        key = dst.resolve()
        if key in input_keys or (dst.exists() and os.path.samefile(dst, src)):
            failures.append((str(src), f"refusing to overwrite an input file ({dst}): choose another -o"))
            _log(f"FAILED {src}: refusing to overwrite an input file ({dst})")
            continue
        if key in produced:
            failures.append((str(src), f"output {dst} already written from {produced[key]}"))
            _log(f"FAILED {src}: output {dst} already written from {produced[key]}")
            continue
        if args.skip_existing and dst.exists():
            skipped += 1
            produced[key] = src
            continue
        try:
            img = read_image(src)
            n_tiles = up.num_tiles(img)
            with tqdm(total=n_tiles, desc=src.name[:30], unit="tile", leave=False,
                      disable=None if bars else True, file=sys.stderr) as tbar:
                res = up.upscale(img, progress=tbar.update)
            write_image(dst, res, args.format, args.quality)
        except UserError:
            raise
        except (ImageError, OSError, ValueError, RuntimeError, MemoryError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if msg.startswith(str(src)):
                msg = msg[len(str(src)):].lstrip(": ")
            failures.append((str(src), msg))
            _log(f"FAILED {src}: {msg}")
            continue
        produced[key] = src
        done += 1
        out_pixels += res.pixels.shape[0] * res.pixels.shape[1]
    file_bar.close()
    secs = time.perf_counter() - t_start
    mp = out_pixels / 1e6
    print(f"{PROG}: {done} file(s) written to {outdir}, {len(failures)} failed, {skipped} skipped; "
          f"{secs:.2f} s, {mp:.3g} output MP, {mp / secs if secs > 0 else 0:.3g} MP/s")
    if failures:
        print(f"{PROG}: failed: " + ", ".join(n for n, _ in failures), file=sys.stderr)
    return 1 if failures else 0


# ----------------------------------------------------------------------------------- build
def cmd_build(args) -> int:
    from runtime import engine_cache as ec
    spec = ec.make_spec(args.onnx, args.tile, args.batch, args.precision, args.plugin)
    try:
        import tensorrt as trt  # noqa: F401
        major = int(trt.__version__.split(".")[0])
    except ImportError:
        major = None
    guess = Path(f"{Path(spec.onnx).stem}-{spec.precision}-t{spec.tile}-b{spec.batch}.engine")
    print(f"trtexec equivalent: {ec.trtexec_command(spec, guess, major or 10)}")
    if major is None:
        print("(TensorRT 11: drop --fp16/--int8; precision comes from the ONNX)")
    out = ec.build_engine(spec, args.cache_dir, force=args.force, log=_log, workspace_gib=args.workspace)
    print(out)
    return 0


# ----------------------------------------------------------------------------------- bench
def _machine(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import torch
            return torch.cuda.get_device_name(torch.device(device))
        except Exception:
            return device
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def cmd_bench(args) -> int:
    from runtime.backends import resolve_device
    backends = [x.strip() for x in args.backend.split(",") if x.strip()]
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    try:
        tiles = [int(x) for x in args.tile.split(",") if x.strip()]
        batches = [int(x) for x in args.batch.split(",") if x.strip()]
    except ValueError:
        raise UserError("--tile and --batch take comma lists of integers, e.g. --tile 32,64") from None
    device = resolve_device(args.device)
    rows = []
    for bk in backends:
        for prec in precisions:
            for tile in tiles:
                for batch in batches:
                    try:
                        be = _open(args, tile=tile, batch=batch, backend=bk, precision=prec)
                    except UserError as e:
                        _log(f"skip {bk}/{prec}/t{tile}/b{batch}: {e}")
                        continue
                    if be.fixed_tile and be.fixed_tile != (tile, tile):
                        _log(f"skip {bk} tile {tile}: model takes {be.fixed_tile[0]} tiles")
                        continue
                    rng = np.random.default_rng(0)
                    x = rng.random((batch, 3, tile, tile), dtype=np.float32)
                    for _ in range(max(0, args.warmup)):
                        be.run(x)
                    times = []
                    for _ in range(max(1, args.iters)):
                        t0 = time.perf_counter()
                        be.run(x)
                        times.append(time.perf_counter() - t0)
                    med = float(np.median(times))
                    mp = batch * (tile * be.scale) ** 2 / 1e6
                    rows.append((be.name, be.device, be.precision, tile, batch, med * 1e3, med * 1e3 / batch,
                                 batch / med, mp / med))
                    be.close()
    cmd = " ".join(shlex.quote(a) for a in [PROG] + list(getattr(args, "argv", ["bench"])))
    print(f"command: `{cmd}`")
    print(f"machine: {_machine(device)}; iters {args.iters}, warmup {args.warmup}, median\n")
    print("| backend | device | precision | tile | batch | latency ms | ms/tile | tiles/s | out MP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[6]:.1f} | {r[7]:.3g} | {r[8]:.3g} |")
    return 0 if rows else 1


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.cmd == "upscale":
            return cmd_upscale(args)
        if args.cmd == "build":
            return cmd_build(args)
        return cmd_bench(args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
