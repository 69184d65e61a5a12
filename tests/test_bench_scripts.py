"""The benchmark scripts' own logic that decides what their tables say (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_gpu import compile_options, interleaved_medians  # noqa: E402


def test_modes_are_timed_in_turn_and_reported_as_medians():
    """A drift over the run (here: every call 1 ms slower than the one before) must land on every
    mode alike. Timing A fully before B would report B 3 ms slower than A."""
    calls = []

    def timer(mode):
        def run():
            calls.append(mode)
            return [(float(len(calls)), 0.5)]  # (ms, host ms); ms grows with every call
        return run
    medians = interleaved_medians({"A": timer("A"), "B": timer("B")}, rounds=3)
    assert calls == ["A", "B"] * 3
    assert medians == {"A": (3.0, 0.5), "B": (4.0, 0.5)}  # A: 1, 3, 5; B: 2, 4, 6 (1 ms apart, not 3)


def test_compile_options_turn_on_exactly_the_named_options():
    options, tf32 = compile_options("compiled:pad+scan_weights+no_layout_opt+tf32")
    assert tf32 and options["pad"] and options["scan_weights"] and not options["layout_opt"]
    assert not options["wide_stream"] and not options["tap_convs"] and not options["freeze"]
    assert not options["low_rank_dt"] and options["stream_multiple"] == 8  # the stream at 184
    assert compile_options("compiled:wide_stream+stream64")[0]["stream_multiple"] == 64
    assert compile_options("compiled") == ({}, False)  # compile_blocks' own defaults


def test_scan_sass_counts_the_scan_loop_not_the_load_loop():
    """scan_sass.py: the loop it counts is the smallest one of >= 8 exponentials that reads shared
    memory only. The tile-load loop (global loads, softplus exponentials) and an outer loop around
    both must not be taken. Where the scan has no loop of its own (unrolled over the tile) it
    counts the tile loop, the one with the most exponentials, and says so; a kernel without a
    loop of >= 8 exponentials reports none rather than a wrong loop."""
    from scan_sass import KERNEL, hot_loop

    def sass(body):  # (mnemonic, branch target index or None) -> (address, opcode, operands)
        return [(16 * i, op, f" `(.L) 0x{16 * t:x}" if t is not None else "") for i, (op, t) in enumerate(body)]

    load = [("LDG.E.128", None)] + [("MUFU.EX2", None)] * 8 + [("BRA", 0)]  # 0..9
    scan = [("LDS.128", None)] + [("FMUL", None), ("MUFU.EX2", None), ("FFMA", None)] * 8 + [("BRA", 10)]
    outer = [("BRA", 0)]
    loop, kind = hot_loop(sass(load + scan + outer))
    assert kind == "scan"
    assert loop["MUFU.EX2"] == 8 and loop["LDS.128"] == 1 and "LDG.E.128" not in loop and sum(loop.values()) == 26
    unrolled = [("LDS.128", None)] + [("FMUL", None), ("MUFU.EX2", None), ("FFMA", None)] * 16 + [("BRA", 0)]
    loop, kind = hot_loop(sass(load + unrolled))  # the load loop inside the tile loop
    assert kind == "tile" and loop["MUFU.EX2"] == 24 and loop["LDG.E.128"] == 1
    assert hot_loop(sass([("LDG.E.128", None)] + [("MUFU.EX2", None)] * 7 + [("BRA", 0)])) is None
    name = "_ZN..11scan_kernelI6__halfLi1ELi2ELi8ELi16ELi64ELi1ELi4ELi0ELb0EEEvNS_6ParamsE"
    assert KERNEL.search(name).groups() == ("6__half", "1", "2", "8", "16", "64", "1", "4", "0", "0")
