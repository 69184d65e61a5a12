"""The one cache root of the project (compiled kernels, exported ONNX, TensorRT engines).

`$MAMBACSR_CACHE` if set, else `$XDG_CACHE_HOME/mambacsr`, else `~/.cache/mambacsr`. Every
module that caches something asks `cache_dir(<what>)` for its own subfolder, so moving the cache
(a read-only home, a shared volume) is one variable.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MAMBACSR_CACHE"


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mambacsr"


def cache_dir(name: str) -> Path:
    """`cache_root() / name` (not created: the caller creates it when it writes)."""
    return cache_root() / name
