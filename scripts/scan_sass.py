#!/usr/bin/env python3
"""Instruction mix of the scan kernel's inner loop, read from the compiled library (no GPU).

The single pass is about 3x its exp floor (``ops/csrc/cuda/NOTES.md``). This script shows how
far the instruction count alone explains that: for each forward ``scan_kernel`` instantiation
it finds the innermost loop that holds the exponentials (a backward branch around MUFU.EX2
instructions), counts its SASS instructions and divides by the exponentials in it. Each
state-token step needs five: the FMUL dt*A and MUFU.EX2 of the decay, the FMUL dt*u*B, and the
two FFMAs for h and C*h. Everything above five is overhead: shared-memory loads (LDS), the
transpose-reduce over the lanes of a channel (SHFL, FADD, FSEL and predicated moves) and the
loop's address arithmetic. Since the single-pass kernels unroll the scan over the whole tile
there is no such loop in them: the script then counts the tile loop (global loads, softplus,
scan, output; static counts, so paths a call does not take count too) and says which it counted.

Needs ``cuobjdump`` (CUDA toolkit, or ``pip install nvidia-cuda-cuobjdump``) and a library:
``--lib`` or the one ``mambacsr.ops.scan_cuda.build_library`` builds (nvcc)::

    python scripts/scan_sass.py --arch 90
    python scripts/scan_sass.py --lib build/libmambacsr_scan.so --dtype fp16
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"f": "fp32", "6__half": "fp16", "13__nv_bfloat16": "bf16"}
# scan_kernel<T, R, S, W, CB, NT, SEG, MINB, MODE, STRIDED>, as mangled by nvcc
KERNEL = re.compile(r"scan_kernelI(f|6__half|13__nv_bfloat16)" + r"Li(\d+)E" * 8 + r"Lb([01])E")
INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
FLOOR = 5  # instructions per state-token step: FMUL, MUFU.EX2, FMUL, FFMA, FFMA


def hot_loop(instrs: list[tuple[int, str, str]]) -> tuple[collections.Counter, str] | None:
    """Opcode counts of the smallest loop (backward branch) that holds at least 8 MUFU.EX2 and
    reads shared memory only (the loads of the next tile, whose softplus also takes MUFU.EX2,
    read global memory), and "scan". Where the scan is unrolled over the whole tile (the
    single-pass kernels since the pipelined loop) or shares its loop with the global loads (SEG
    kernels) there is no such loop: then the loop with the most exponentials, the tile loop
    (prep, scan and output of one tile; its MUFU.EX2 include the softplus), and "tile"."""
    best = {}
    for addr, op, args in instrs:
        target = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if target is None or int(target.group(1), 16) >= addr:
            continue
        lo = int(target.group(1), 16)
        body = collections.Counter(o for a, o, _ in instrs if lo <= a <= addr)
        if body["MUFU.EX2"] < 8:
            continue
        kind = "tile" if any(op.startswith("LDG") for op in body) else "scan"
        # scan: the innermost such loop; tile: the one with the most exponentials (smaller loops
        # with global reads are the scalar fallbacks of odd shapes).
        key = (sum(body.values()),) if kind == "scan" else (-body["MUFU.EX2"], sum(body.values()))
        if kind not in best or key < best[kind][0]:
            best[kind] = (key, body)
    for kind in ("scan", "tile"):
        if kind in best:
            return best[kind][1], kind
    return None


def rows(sass: str, dtype: str | None):
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name, _, body = chunk.partition("\n")
        m = KERNEL.search(name)
        if m is None or m.group(10) == "1":  # the strided instantiation: same loop, other loads
            continue
        t = DTYPES.get(m.group(1), "fp32")
        if dtype and t != dtype:
            continue
        r, s, w, cb, nt, seg, minb, mode = (int(x) for x in m.groups()[1:9])
        found = hot_loop([(int(a, 16), op, args) for a, op, args in INSTR.findall(body)])
        loop, kind = found if found else (None, "")
        yield (t, f"R{r}_S{s}_W{w} CB{cb} SEG{seg}", "output" if mode == 0 else "state", kind, loop)


def group(loop: collections.Counter) -> dict[str, int]:
    by = collections.Counter()
    for op, n in loop.items():
        head = op.split(".")[0]
        key = ("exp" if op.startswith("MUFU.EX2") else "FMUL/FFMA" if head in ("FMUL", "FFMA")
               else "LDS/STS" if head in ("LDS", "STS") else "SHFL" if head == "SHFL"
               else "FADD/FSEL/MOV" if head in ("FADD", "FSEL") or op.startswith("IMAD.MOV") else "other")
        by[key] += n
    return by


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", type=Path, help="libmambacsr_scan.so (default: build it for --arch)")
    ap.add_argument("--arch", default="90", help="SM version to build for when --lib is not given")
    ap.add_argument("--dtype", choices=sorted(set(DTYPES.values())), help="only this I/O type")
    args = ap.parse_args(argv)
    tool = shutil.which("cuobjdump")
    if tool is None:
        raise SystemExit("error: cuobjdump not found: put the CUDA toolkit's bin/ on PATH or "
                         "pip install nvidia-cuda-cuobjdump (its nvidia/cu13/bin)")
    lib = args.lib
    if lib is None:
        from mambacsr.ops import scan_cuda

        lib = scan_cuda.build_library(args.arch)
    sass = subprocess.run([tool, "-sass", str(lib)], check=True, capture_output=True, text=True).stdout
    cols = ["exp", "FMUL/FFMA", "LDS/STS", "SHFL", "FADD/FSEL/MOV", "other"]
    print(f"the loop around the exponentials of each forward scan_kernel in {lib.name} (per exponential; floor {FLOOR})\n")
    print("| I/O | variant | pass | loop | instructions | per exp | " + " | ".join(cols) + " |")
    print("|---|---|---|---|---:|---:|" + "---:|" * len(cols))
    for t, variant, mode, kind, loop in sorted(rows(sass, args.dtype), key=lambda r: r[:3]):
        if loop is None:
            print(f"| {t} | {variant} | {mode} | no loop with >= 8 exps |" + " |" * (len(cols) + 2))
            continue
        by, exps = group(loop), loop["MUFU.EX2"]
        total = sum(loop.values())
        print(f"| {t} | {variant} | {mode} | {kind} | {total} | {total / exps:.2f} | "
              + " | ".join(f"{by[c] / exps:.2f}" for c in cols) + " |")
    print("\nloop: scan = the inner loop over shared memory alone; tile = the whole tile loop (global "
          "loads, softplus, scan unrolled over the tile, output), where the scan has no loop of its own")
    print(f"\ncommand: python scripts/scan_sass.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
