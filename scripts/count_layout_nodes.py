#!/usr/bin/env python
"""Layout nodes per SelectiveScan in an exported model: the memory passes a TensorRT engine keeps
around each scan (a plugin is a fusion barrier). Counts top-level graph nodes only: the
SelectiveScan function body is not run when the plugin takes the node.

    python scripts/count_layout_nodes.py --preset final-x4 --tile 64

`--embed-dim` shrinks the channels for a faster export (the node count depends only on depth
and directions, not on the width).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYOUT_OPS = ("Transpose", "Slice", "Gather", "GatherElements", "Split", "Pad", "Concat", "Tile", "Expand")


def count(path) -> tuple[Counter, int]:
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in proto.graph.node)
    return ops, ops.get("SelectiveScan", 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="final-x4")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--embed-dim", type=int, default=None, help="override the preset's width (default: keep)")
    ap.add_argument("--onnx", help="count an existing file instead of exporting")
    args = ap.parse_args()
    if args.onnx:
        ops, scans = count(args.onnx)
    else:
        import torch

        from export.onnx import export_model
        from mambacsr import PRESETS, MambaCSR
        cfg = dict(PRESETS[args.preset])
        if args.embed_dim:
            cfg["embed_dim"] = args.embed_dim
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path = export_model(MambaCSR(**cfg).eval(), Path(tmp) / "m.onnx", tile=args.tile)
            print(f"exported in {time.perf_counter() - t0:.0f} s")
            ops, scans = count(path)
    layout = {op: ops[op] for op in LAYOUT_OPS if ops.get(op)}
    total = sum(layout.values())
    print("command: python " + " ".join(sys.argv))
    print(f"SelectiveScan nodes: {scans}; layout nodes: {total} ({', '.join(f'{k} {v}' for k, v in layout.items())})")
    print(f"layout nodes per SelectiveScan: {total / max(scans, 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
