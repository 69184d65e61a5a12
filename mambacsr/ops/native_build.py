"""Build, cache and load the compiled kernels (the C CPU kernel, the CUDA kernel): one path.

Both bindings (`scan_cpu`, `scan_cuda`) compile on first use and must behave alike: a library is
cached under `mambacsr.cache.cache_dir(<folder>)` by a hash of everything that decides its bytes
(the sources and headers, plus the compiler version, flags and architecture the caller passes);
it is compiled into a temporary file beside its final name and renamed into place
(`mambacsr.atomic`), so concurrent processes never load half a file; and every failure (no
compiler, a compile error, a stale or unloadable library) is one `NativeBuildError`, which the
bindings turn into one warning per kernel (`warn_unavailable`) naming the reason and the fallback.
A compile error also leaves a `.failed` marker, so later processes skip the doomed build.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..atomic import atomic_write
from ..cache import cache_dir

log = logging.getLogger(__name__)


class NativeBuildError(RuntimeError):
    """A compiled kernel could not be built or loaded; the message says why."""


# ---- one warning per kernel -------------------------------------------------------------------

_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_unavailable(what: str, reason: object, fallback: str, stacklevel: int = 2) -> None:
    """Say once per process that the `what` kernel is unavailable, why, and what runs instead
    (a log warning and a RuntimeWarning: the CLI prints the pair as one line)."""
    with _warn_lock:
        if what in _warned:
            return
        _warned.add(what)
    msg = f"mambacsr: the {what} kernel is unavailable ({reason}); falling back to {fallback}"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)


def forget_warning(what: str) -> None:
    """Let `warn_unavailable(what, ...)` speak again (a binding's reset(), tests)."""
    with _warn_lock:
        _warned.discard(what)


# ---- cache key and folder ---------------------------------------------------------------------

def compiler_version(exe: str, timeout: float = 60) -> str:
    """`exe --version` ('' when it does not run): part of every cache key."""
    try:
        res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout.strip()


def cache_key(sources: Iterable[str | os.PathLike], key: Iterable[object] = ()) -> str:
    """sha256 of every source's name and bytes and of the `key` parts (20 hex digits)."""
    digest = hashlib.sha256()
    try:
        for src in sources:
            data = Path(src).read_bytes()
            digest.update(f"{Path(src).name}\0{len(data)}\0".encode())
            digest.update(data)
    except OSError as exc:
        raise NativeBuildError(f"kernel source unreadable: {exc}") from exc
    for part in key:
        digest.update(b"\0" + str(part).encode())
    return digest.hexdigest()[:20]


def writable_cache_dir(folder: str) -> Path:
    """`cache_dir(folder)`, created; a per-user temporary folder instead when that cannot be
    written (a read-only home must not cost the kernel)."""
    out = cache_dir(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if os.access(out, os.W_OK):
            return out
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"mambacsr-cache-{uid}" / folder
    try:
        fallback.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NativeBuildError(f"no writable cache folder ({out}, {fallback}): {exc}") from exc
    log.info("cache folder %s is not writable: using %s", out, fallback)
    return fallback


# ---- build and load ---------------------------------------------------------------------------

def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def build(command: Sequence[str | os.PathLike], sources: Sequence[str | os.PathLike], *,
          folder: str | os.PathLike, target: str, key: Sequence[object],
          timeout: float = 1800, verbose: bool = False) -> Path:
    """The cached library built by `command -o <file>`; compiled now if not cached yet.

    sources: every file the library depends on (compiled files and the headers they include);
    key: what else decides its bytes (compiler version, flags, architecture, machine). Both go
    into the hash that names it: `target` with `{key}` replaced, e.g. "libfoo-{key}.so", inside
    `folder` (a cache subfolder name, or an explicit directory). Raises NativeBuildError.
    """
    base = writable_cache_dir(folder) if isinstance(folder, str) else Path(folder)
    lib = base / target.format(key=cache_key(sources, key))
    if lib.is_file():
        return lib
    failed = lib.with_name(lib.name + ".failed")
    if failed.is_file():
        first = failed.read_text(errors="replace").splitlines()[:1] or [""]
        raise NativeBuildError(f"{first[0]} (an earlier build; delete {failed} to retry)")
    cmd = [str(c) for c in command]
    exe = Path(cmd[0]).name
    try:
        with atomic_write(lib, suffix=lib.suffix or ".so") as tmp:
            try:
                res = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True,
                                     timeout=timeout)
            except (OSError, subprocess.SubprocessError) as exc:  # no exec, timeout: not cached
                raise NativeBuildError(f"{exe} failed to run: {exc}") from exc
            output = (res.stderr + res.stdout).strip()
            if verbose and output:
                print(output)
            if res.returncode != 0:
                reason = f"{exe} exited with status {res.returncode}: {_tail(output)}"
                try:
                    with atomic_write(failed) as mark:
                        mark.write_text(f"{reason}\n$ {' '.join(cmd)}\n{output[-4000:]}\n")
                except OSError:
                    pass
                raise NativeBuildError(reason)
    except OSError as exc:  # the cache folder itself (mkdir, temp file, rename)
        raise NativeBuildError(f"cannot write {lib}: {exc}") from exc
    log.info("built %s ($ %s)", lib, " ".join(cmd))
    return lib


def load(path: str | os.PathLike, bind: Callable[[ctypes.CDLL], None] | None = None) -> ctypes.CDLL:
    """ctypes.CDLL(path) with `bind(lib)` run on it (argtypes, version checks); any failure,
    a missing symbol included, is a NativeBuildError."""
    try:
        lib = ctypes.CDLL(str(path))
        if bind is not None:
            bind(lib)
    except NativeBuildError:
        raise
    except (OSError, AttributeError, TypeError, ValueError) as exc:
        raise NativeBuildError(f"cannot load {path}: {exc}") from exc
    return lib


def check_version(lib: ctypes.CDLL, symbol: str, expected: int) -> None:
    """Raise NativeBuildError unless `lib.symbol()` (an int getter) returns `expected`."""
    fn = getattr(lib, symbol)
    fn.restype = ctypes.c_int
    fn.argtypes = []
    got = fn()
    if got != expected:
        raise NativeBuildError(f"{lib._name}: {symbol}() is {got}, this binding expects {expected} "
                               "(a stale library: rebuild it)")
