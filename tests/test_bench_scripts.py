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
    assert compile_options("compiled") == ({}, False)  # compile_blocks' own defaults
