"""mambacsr-rt: upscale / build / bench, a command line over the runtime library.

The library (:mod:`runtime.backends`, :mod:`runtime.plan`, :mod:`runtime.upscale`) names its
fields in errors (``tile=100``); :data:`FLAGS` maps them to this tool's flags, here only.

Exit codes: 0 all good, 1 some inputs failed, 2 usage or configuration error (one line, no
traceback).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import platform
import re
import shlex
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mambacsr.usage import ArgumentParser, float_range, int_range, output_problem
from runtime.backends import BACKENDS
from runtime.errors import UserError
from runtime.jobs import (IMAGE_FAILURES, PROG, failure_message, model_options, open_upscaler, report_upscale,
                          tiles_used, upscale_image)
from runtime.jobs import log as _log
from runtime.plan import MIN_TILE, MIN_TILE_WHY, PRECISIONS, RunPlan, check_options

TILE = int_range(MIN_TILE, why=MIN_TILE_WHY)

# the library's field names -> this tool's flags (its errors say `tile=100`, the user reads `--tile 100`)
FLAGS = {"tile": "--tile", "overlap": "--overlap", "batch": "--batch", "mode": "--tile-mode", "window": "--blend",
         "precision": "--precision", "backend": "--backend", "device": "--device", "threads": "--threads",
         "engine": "--engine", "onnx": "--onnx", "ckpt": "--ckpt", "plugin": "--plugin",
         "config": "--config/--preset"}
_FIELD = re.compile(r"(?<![\w./=-])(" + "|".join(FLAGS) + r")=([^\s,;()`'\"]*[^\s,;()`'\":.])")


def as_flags(message: str) -> str:
    """A library message in this tool's words: ``tile=100`` -> ``--tile 100``."""
    return _FIELD.sub(lambda m: f"{FLAGS[m.group(1)]} {m.group(2)}", message)


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
        r.add_argument("--backend", default="auto", help=f"comma list of auto|{'|'.join(BACKENDS)} (default auto)")
        r.add_argument("--precision", default="auto",
                       help=f"comma list of auto|{'|'.join(PRECISIONS)} (default auto: the model's)")
        r.add_argument("--tile", default="64", help="comma list of LR tile sizes (default 64)")
        r.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    else:
        r.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                       help="auto picks by model: engine->trt, onnx->ort, ckpt->torch (logged)")
        r.add_argument("--precision", default=None, choices=PRECISIONS,
                       help="default: the model's (an ONNX file's or engine's own; fp32 for a checkpoint); "
                            "a precision the backend cannot run is refused")
        r.add_argument("-t", "--tile", type=TILE, default=None,
                       help="LR tile size (default: the engine's, else chosen from free memory; 64 on CPU)")
        r.add_argument("--batch", type=int_range(1), default=None, help="tiles per model call (default: auto)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int_range(1), default=None, help="CPU threads for torch/onnxruntime")
    r.add_argument("--no-compile", action="store_true",
                   help="torch backend on CUDA: skip torch.compile of the blocks (no first-use compile time, "
                        "slower per tile)")
    r.add_argument("--tf32", action="store_true",
                   help="torch backend, fp32 on CUDA: matrix products on TF32 tensor cores (faster, "
                        "10-bit mantissa products, as TensorRT's fp32 engines)")


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("mambacsr-deploy")
    except (ImportError, PackageNotFoundError):
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=PROG, description="MambaCSR tiled super-resolution runtime")
    ap.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("upscale", tool=PROG, help="upscale images, folders or globs")
    up.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    up.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output folder; or, for a single input, an output file (out.png, out.jpg, ...)")
    up.add_argument("-f", "--format", default=None, choices=["png", "jpg", "webp", "tiff"],
                    help="output format (default png, or -o's extension; 16-bit inputs stay 16-bit in png/tiff)")
    up.add_argument("--quality", type=int_range(1, 100), default=None,
                    help="jpg/webp quality 1-100 (default 95; webp 100 = lossless)")
    up.add_argument("-s", "--outscale", type=float_range(0, 16), default=None,
                    help="final scale of the output (Lanczos resize after the model; default: the model's)")
    up.add_argument("--suffix", default="", help="appended to output names: a.png -> a_SUFFIX.png")
    _add_model_args(up)
    up.add_argument("--overlap", type=int_range(0), default=None, help="LR pixels shared by tiles (default tile/8)")
    up.add_argument("--tile-mode", default="blend", choices=["blend", "official"],
                    help="blend: fixed tiles, feathered merge; official: the official test partitioning")
    up.add_argument("--blend", default=None, choices=["sine", "linear"], help="blend window (default sine)")
    up.add_argument("--tta", action="store_true", help="x8 flip/transpose self-ensemble (8x slower)")
    up.add_argument("--skip-existing", action="store_true",
                    help="skip inputs whose output exists (a 0-byte or unreadable output is redone)")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    ray = up.add_argument_group("scale-out with Ray (pip install -e \".[ray]\")")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="spread the images over Ray workers: no ADDRESS starts a local Ray with this "
                          "machine's GPUs (or CPUs); auto or ray://host:10001 joins a cluster "
                          "(write --ray=ADDRESS or put --ray after the inputs)")
    ray.add_argument("--workers", type=int_range(1), default=None,
                     help="Ray workers, each loading the model once (default: one per GPU, or 2 on CPU)")
    ray.add_argument("--gpus-per-worker", type=float_range(0, 64), default=None,
                     help="GPUs per Ray worker, fractions allowed (default 1, or 0 on CPU-only clusters)")

    b = sub.add_parser("build", tool=PROG, help="build and cache a TensorRT engine from an ONNX file")
    b.add_argument("--onnx", required=True)
    b.add_argument("--plugin", help="libmambacsr_plugins.so (needed for SelectiveScan nodes)")
    b.add_argument("--tile", type=TILE, default=None, help="LR tile (default: the ONNX's)")
    b.add_argument("--batch", type=int_range(1), default=1)
    b.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="default: the ONNX file's (TensorRT 11 is strongly typed: only that one)")
    b.add_argument("--cache-dir", default=None,
                   help="engine cache (default: engines/ in $MAMBACSR_CACHE, else ~/.cache/mambacsr)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--workspace", type=float_range(0, 1024), default=4.0, help="builder workspace GiB (default 4)")

    be = sub.add_parser("bench", tool=PROG, help="latency/throughput per backend, precision, tile and batch")
    _add_model_args(be, lists=True)
    be.add_argument("--iters", type=int_range(1), default=5)
    be.add_argument("--warmup", type=int_range(0), default=1)
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


def _real(p: Path) -> Path:
    """``p`` with links resolved; unlike Path.resolve, a link loop does not raise."""
    return Path(os.path.realpath(p))


def _same_file(a: Path, b: Path) -> bool:
    """Hard links count as the same file; a missing or looping path is not the same as anything."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _walk_images(d: Path, prune: Path | None, failed: list[tuple[str, str]]) -> list[Path]:
    """Image files under ``d`` (hidden names skipped), following folder links once each, so a
    link loop ends; unreadable folders go to ``failed`` instead of vanishing."""
    from runtime.imageio import is_image_name
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def unreadable(e: OSError):
        failed.append((e.filename or str(d), f"cannot read this folder ({e.strerror}): fix its permissions"))

    for cur, dirs, files in os.walk(d, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(cur)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:  # reached again through a link: a loop or a duplicate
            dirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(x for x in dirs if not x.startswith(".")
                         and not (prune is not None and _real(Path(cur, x)) == prune))
        found += [Path(cur, f) for f in files if is_image_name(Path(f))]
    return sorted(found)


def collect_inputs(inputs: list[str], exclude: Path | None = None
                   ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand files/folders/globs into (file, relative output stem) pairs, plus failed ones.

    A folder scan skips ``exclude`` (the output folder) when it lies strictly inside the folder,
    so re-running into a sub-folder of the input does not upscale earlier outputs. An output
    folder equal to or above the input folder excludes nothing: the inputs are still found.
    """
    skip = _real(exclude) if exclude is not None else None
    items: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    seen: set = set()

    def add(f: Path, rel: Path):
        key = _real(f)
        if key not in seen:
            seen.add(key)
            items.append((f, rel))

    def add_dir(d: Path):
        root = _real(d)
        prune = skip if skip is not None and skip != root and skip.is_relative_to(root) else None
        for f in _walk_images(d, prune, missing):
            add(f, f.relative_to(d).with_suffix(""))

    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            add_dir(p)
        elif p.exists() or p.is_symlink():
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
_FORMAT_NAMES = {"jpeg": "jpg", "tif": "tiff"}


def _check_upscale(args) -> None:
    """Options that contradict each other, and the output location: checked before any model is
    loaded, so a mistake costs a second (UserError: exit 2, one line)."""
    from runtime.imageio import format_of
    out = Path(args.output)
    named = format_of(out)
    args.single = named is not None and not out.is_dir()  # -o names the output file itself
    if args.single:
        named = _FORMAT_NAMES.get(named, named)
        if args.format and args.format != named:
            raise UserError(f"-o {out} is a {named} file name but --format is {args.format}: "
                            f"drop --format or name the file .{args.format}")
        if args.suffix:
            raise UserError(f"--suffix renames outputs in a folder, but -o {out} names the file itself: "
                            f"drop --suffix")
        args.format = named
    args.format = args.format or "png"
    if args.quality is not None and args.format not in ("jpg", "webp"):
        raise UserError(f"--quality applies to jpg and webp, not {args.format}: drop --quality or pass -f jpg")
    args.quality = 95 if args.quality is None else args.quality
    if args.suffix and (os.sep in args.suffix or "/" in args.suffix or "\0" in args.suffix):
        raise UserError(f"--suffix {args.suffix!r} contains a path separator: give a plain word such as x4")
    check_options(tile=args.tile, overlap=args.overlap, batch=args.batch, mode=args.tile_mode, window=args.blend)
    problem = output_problem(out, folder=not args.single)
    if problem:
        raise UserError(f"-o {out}: {problem}")


def _plan(args, items: list[tuple[Path, Path]], failures: list[tuple[str, str]]) -> list[tuple[Path, Path]]:
    """(input, output) pairs; inputs whose output would overwrite an input or another output
    are failed here, before any model is loaded."""
    from runtime.imageio import EXTENSIONS
    out = Path(args.output)
    if args.single:
        if not items:  # the one input is missing: reported as a failed input, like in a batch
            return []
        if len(items) != 1 or any(Path(a).is_dir() or _has_magic(a) for a in args.inputs):
            raise UserError(f"-o {out} names one output file, but the inputs hold {len(items)} images: "
                            f"pass an output folder as -o")
        src = items[0][0]
        if _real(out) == _real(src) or _same_file(out, src):
            raise UserError(f"-o {out} is the input file itself: choose another output name")
        return [(src, out)]
    ext = EXTENSIONS[args.format]
    tail = f"_{args.suffix}" if args.suffix else ""
    inputs = {_real(f) for f, _ in items}
    planned: dict[Path, Path] = {}
    jobs = []
    for src, rel in items:
        dst = out / rel.parent / (rel.name + tail + ext)
        key = _real(dst)
        if key in inputs or _same_file(dst, src):
            failures.append((str(src), f"its output {dst} would overwrite an input file: choose another -o "
                                       f"or pass --suffix"))
        elif key in planned:
            failures.append((str(src), f"its output {dst} is also the output of {planned[key]}: "
                                       f"rename one, or use -f/--suffix"))
        else:
            planned[key] = src
            jobs.append((src, dst))
    return jobs


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def plan_upscale(args):
    """Options checked, inputs collected, outputs named, --skip-existing applied: (jobs, failures,
    skipped, items). Shared by the one-process and the Ray path, so both follow the same rules."""
    from runtime.imageio import is_complete_image
    _check_upscale(args)
    out = Path(args.output)
    items, failures = collect_inputs(args.inputs, exclude=None if args.single else out)
    jobs = _plan(args, items, failures)
    for name, why in failures:
        _log(f"FAILED {name}: {why}")
    skipped = [j for j in jobs if args.skip_existing and is_complete_image(j[1])]
    jobs = [j for j in jobs if j not in skipped]
    return jobs, failures, skipped, items


def nothing_to_do(args, items, failures, skipped) -> int:
    if not items and not failures:
        _log("nothing to do: no input images found")
    elif failures:
        _log("nothing to do: every input failed (see above)")
    print(f"{PROG}: 0 file(s) written, {len(failures)} failed, {len(skipped)} skipped")
    return 1 if failures or not items else 0


def cmd_upscale(args) -> int:
    from tqdm import tqdm

    from runtime.imageio import read_image, write_image

    log = (lambda m: None) if args.quiet else _log
    if args.ray is not None:
        from runtime import distributed
        distributed.import_ray(args)  # missing ray or bad --ray use: exit 2 before any work
    elif args.workers is not None or args.gpus_per_worker is not None:
        raise UserError("--workers and --gpus-per-worker size the Ray workers: add --ray, or drop them")
    jobs, failures, skipped, items = plan_upscale(args)
    if not jobs:
        return nothing_to_do(args, items, failures, skipped)
    if args.ray is not None:
        return distributed.upscale(args, jobs, failures, skipped, log)

    up, line = open_upscaler(args, log)
    log(line)

    done = 0
    out_pixels = 0
    t_start = time.perf_counter()
    bars = not args.quiet
    lines = not args.quiet and not _stderr_is_terminal()  # one line per file instead of bars
    file_bar = tqdm(jobs, desc="files", unit="file", disable=None if bars else True, file=sys.stderr)
    for src, dst in file_bar:
        t0 = time.perf_counter()
        try:
            img = read_image(src)
            for note in img.notes:
                _log(f"{src}: note: {note}")
            n_tiles = up.num_tiles(img)
            with tqdm(total=n_tiles, desc=src.name[:30], unit="tile", leave=False,
                      disable=None if bars else True, file=sys.stderr) as tbar:
                res = upscale_image(up, args, img, progress=tbar.update)
            write_image(dst, res, args.format, args.quality)
        except UserError:
            raise
        except IMAGE_FAILURES as e:
            msg = failure_message(src, e)
            failures.append((str(src), msg))
            _log(f"FAILED {src}: {msg}")
            continue
        done += 1
        out_pixels += res.pixels.shape[0] * res.pixels.shape[1]
        if lines:
            (w, h), (ow, oh) = img.size, res.size
            _log(f"done {src} -> {dst}: {w}x{h} -> {ow}x{oh}, {tiles_used(up, img, n_tiles)}, "
                 f"{time.perf_counter() - t0:.2f} s")
    file_bar.close()
    return report_upscale(args, done, failures, skipped, time.perf_counter() - t_start, out_pixels)


# ----------------------------------------------------------------------------------- build
def cmd_build(args) -> int:
    from runtime import engine_cache as ec
    from runtime.trt_common import import_tensorrt, trt_major
    spec = ec.make_spec(args.onnx, args.tile, args.batch, args.precision, args.plugin)
    try:
        major = trt_major(import_tensorrt())
    except UserError:
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
    from runtime import backends as rb
    backends = [x.strip() for x in args.backend.split(",") if x.strip()]
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    try:
        tiles = [TILE(x) for x in args.tile.split(",") if x.strip()]
        batches = [int_range(1)(x) for x in args.batch.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        raise UserError(f"--tile and --batch take comma lists such as --tile 32,64 --batch 1,4: {e}") from None
    if not (backends and precisions and tiles and batches):
        raise UserError("--backend, --precision, --tile and --batch need at least one value each")
    device = rb.resolve_device(args.device)
    rows = []
    for bk in backends:
        for prec in precisions:
            for tile in tiles:
                for batch in batches:
                    be = None
                    try:  # the plan upscale would use: a tile the model cannot take is skipped
                        be = rb.open_backend(**model_options(args, backend=bk, log=_log,
                                                              precision=None if prec == "auto" else prec))
                        plan = RunPlan.for_backend(be, tile=tile, batch=batch)
                    except UserError as e:
                        _log(f"skip {bk}/{prec}/t{tile}/b{batch}: {as_flags(str(e))}")
                        if be is not None:
                            be.close()
                        continue
                    rng = np.random.default_rng(0)
                    x = rng.random((plan.batch, 3, *plan.tile), dtype=np.float32)
                    for _ in range(max(0, args.warmup)):
                        be.run(x)
                    times = []
                    for _ in range(max(1, args.iters)):
                        t0 = time.perf_counter()
                        be.run(x)
                        times.append(time.perf_counter() - t0)
                    med = float(np.median(times))
                    n = plan.batch
                    mp = n * plan.tile[0] * plan.tile[1] * be.scale ** 2 / 1e6
                    rows.append((be.name, be.device, plan.precision, plan.tile[0], n, med * 1e3, med * 1e3 / n,
                                 n / med, mp / med))
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
@contextmanager
def _one_line_warnings():
    """Library warnings and log records, one line each and each only once, in this tool's voice
    (a library that both logs and warns the same thing is heard once)."""
    said: set[str] = set()

    def say(text: str) -> None:
        lines = str(text).strip().splitlines()
        if lines and lines[0] not in said:
            said.add(lines[0])
            _log(f"warning: {lines[0]}")

    class Handler(logging.Handler):
        def emit(self, record):
            say(record.getMessage())

    handler = Handler(logging.WARNING)
    root = logging.getLogger()
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *a, **k: say(str(message))
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage error (one line, exit 2), --help or --version (exit 0)
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv
    try:
        with _one_line_warnings():
            if args.cmd == "upscale":
                return cmd_upscale(args)
            if args.cmd == "build":
                return cmd_build(args)
            return cmd_bench(args)
    except UserError as e:
        print(f"{PROG}: error: {as_flags(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished outputs are complete, none is half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
