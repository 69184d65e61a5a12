"""`mambacsr.ops.native_build`, the one build-cache-load path of the C and CUDA kernels, with fake
compilers (shell scripts): the cache key follows the sources, a failed compile raises the one
exception and leaves no partial library, the cache root honours XDG_CACHE_HOME, and the
unavailable-kernel warning is said once."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mambacsr.ops import native_build, scan_cpu, scan_cuda
from mambacsr.ops.native_build import NativeBuildError

# Compiles by writing "lib" to the file after -o.
GOOD_CC = '#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\nprintf lib > "$2"\n'
# Writes half a library, then fails.
BAD_CC = ('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\nprintf half > "$2"\n'
          'echo "kernel.c:1: error: boom" >&2\nexit 1\n')


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("MAMBACSR_CACHE", str(root))
    return root


def test_cache_key_follows_every_source_and_key_part(tmp_path, cache):
    cc = _script(tmp_path / "cc", GOOD_CC)
    src, hdr = tmp_path / "k.c", tmp_path / "k.h"
    src.write_text("int f(void);")
    hdr.write_text("/* v1 */")

    def build(key=("v1", "-O3")):
        return native_build.build([cc, src], (src, hdr), folder="kern", target="k-{key}.so", key=key)

    first = build()
    assert first.parent == cache / "kern" and first.read_text() == "lib"
    assert build() == first                                  # cached
    assert build(("v1", "-O2")) != first                     # flags
    assert build(("v2", "-O3")) != first                     # compiler version
    hdr.write_text("/* v2 */")
    assert build() != first                                  # a header
    hdr.write_text("/* v1 */")
    assert build() == first
    src.write_text("int g(void);")
    assert build() != first                                  # the compiled file


def test_failed_compile_raises_once_leaves_no_partial_file(tmp_path, cache):
    cc = _script(tmp_path / "cc", BAD_CC)
    src = tmp_path / "k.c"
    src.write_text("x")
    with pytest.raises(NativeBuildError, match="boom"):
        native_build.build([cc, src], [src], folder="kern", target="k-{key}.so", key=())
    files = sorted(p.name for p in (cache / "kern").iterdir())
    assert len(files) == 1 and files[0].endswith(".so.failed")  # the marker, no library, no temp
    # A later process does not run the doomed compile again (the compiler would now succeed).
    _script(tmp_path / "cc", GOOD_CC)
    with pytest.raises(NativeBuildError, match="earlier build"):
        native_build.build([cc, src], [src], folder="kern", target="k-{key}.so", key=())


def test_missing_compiler_and_source_are_the_same_error(tmp_path, cache):
    src = tmp_path / "k.c"
    with pytest.raises(NativeBuildError, match="unreadable"):
        native_build.build(["cc", src], [src], folder="kern", target="k-{key}.so", key=())
    src.write_text("x")
    with pytest.raises(NativeBuildError, match="failed to run"):
        native_build.build([str(tmp_path / "no-such-cc"), src], [src], folder="kern",
                           target="k-{key}.so", key=())
    assert not list((cache / "kern").iterdir())              # nothing cached for transient errors
    with pytest.raises(NativeBuildError, match="cannot load"):
        native_build.load(tmp_path / "missing.so")


def test_cache_root_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMBACSR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cc = _script(tmp_path / "cc", GOOD_CC)
    src = tmp_path / "k.c"
    src.write_text("x")
    lib = native_build.build([cc, src], [src], folder="kern", target="sub-{key}/lib.so", key=())
    assert lib.parent.parent == tmp_path / "xdg" / "mambacsr" / "kern"
    cpu_dir = native_build.writable_cache_dir(scan_cpu.CACHE_FOLDER)
    assert cpu_dir == tmp_path / "xdg" / "mambacsr" / "scan_cpu"


def test_cuda_key_covers_every_cu_and_header():
    compiled, hashed = scan_cuda.kernel_sources()
    assert scan_cuda.CSRC_DIR / "selective_scan.cu" in compiled
    assert all(p.suffix == ".cu" for p in compiled)
    assert set(compiled) < set(hashed)
    assert {p.name for p in hashed} >= {"mambacsr_scan.h", "mambacsr_scan_order.h"}
    assert set(scan_cuda.CSRC_DIR.glob("*.h")) <= set(hashed)


def test_unavailable_warning_is_said_once(caplog):
    what = "test-only"
    native_build.forget_warning(what)
    try:
        with pytest.warns(RuntimeWarning, match=r"the test-only kernel is unavailable \(why\); "
                                                 r"falling back to plan B"):
            native_build.warn_unavailable(what, "why", "plan B")
        assert "test-only kernel is unavailable" in caplog.text
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            native_build.warn_unavailable(what, "why", "plan B")
    finally:
        native_build.forget_warning(what)
