"""Command-line checks shared by `mambacsr-rt`, `python -m export.onnx` and `python -m export.quantize`.

Every option and the output location are checked before any model is loaded or any pixel is
computed, so a typo costs a second, not an export; a usage error is one line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

USAGE_EXIT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): `tool: error: <problem and fix>`, exit 2.

    ``tool``: the name errors start with (a sub-command's parser passes the tool's own name)."""

    def __init__(self, *args, tool: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tool = tool or self.prog

    def error(self, message: str):
        self.exit(USAGE_EXIT, f"{self.tool}: error: {message} (see {self.prog} --help)\n")


def int_range(lo: int, hi: int | None = None, why: str = ""):
    """An argparse type: an integer in [lo, hi]; the message says the range (and why)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{v} is out of range: use an integer {span}{why}")
        return v
    return parse


def float_range(lo: float, hi: float, why: str = ""):
    """An argparse type: a number in (lo, hi]."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (lo < v <= hi):
            raise argparse.ArgumentTypeError(f"{v:g} is out of range: use a number above {lo:g} and up "
                                             f"to {hi:g}{why}")
        return v
    return parse


def output_problem(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why `path` cannot be written (a file, or a folder of outputs with ``folder``) and what to
    do instead, or None.

    Writes a probe file in the nearest existing folder, so read-only mounts and permissions are
    both caught (root included); nothing is left behind."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            return f"{path} is a file, not a folder: name a folder"
        if not folder and path.is_dir():
            return f"{path} is a folder: name a file inside it"
    base = path if (folder and path.is_dir()) else path.parent
    while not base.exists():
        if base.is_symlink():
            return f"{base} is a broken symbolic link: fix it or choose another location"
        base = base.parent
    if not base.is_dir():
        return f"{base} is a file, so nothing can be created under it: choose another location"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot create files in {base} ({e.strerror or e}): choose a writable location"
    return None


def fail(prog: str, message: str) -> int:
    """Print a usage error as one line; returns the exit code for `sys.exit`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USAGE_EXIT
