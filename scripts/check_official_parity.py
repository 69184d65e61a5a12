#!/usr/bin/env python
"""Compare `mambacsr.MambaCSR` with the official implementation on random weights.

Needs a checkout of the official code (github.com/renyulin-f/MambaCSR; not shipped here) and
einops. The official arch imports timm, fvcore, basicsr's registry and mamba-ssm's CUDA
extension only for things inference does not use or for the scan itself: they are replaced
by small stand-ins, and the official scan call is answered by our float64 reference.

    python scripts/check_official_parity.py --official-repo /path/to/MambaCSR
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import types

import torch
import torch.nn as nn

from mambacsr import MambaCSR, PRESETS
from mambacsr.ops import selective_scan_ref


def _install_stand_ins():
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class Registry:
        def register(self, *a, **k):
            return lambda cls: cls

    class DropPath(nn.Module):
        def __init__(self, p=0.0):
            super().__init__()

        def forward(self, x):
            return x

    module("basicsr"), module("basicsr.utils"), module("basicsr.utils.registry", ARCH_REGISTRY=Registry())
    module("timm"), module("timm.models")
    module("timm.models.layers", DropPath=DropPath, to_2tuple=lambda x: x if isinstance(x, tuple) else (x, x),
           trunc_normal_=nn.init.trunc_normal_)
    module("fvcore"), module("fvcore.nn", flop_count=None)
    module("csms6s", selective_scan_flop_jit=None)

    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        y = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(), D.double(),
                               delta_bias.double(), bool(delta_softplus))
        return y.to(u.dtype), None

    module("selective_scan_cuda", fwd=fwd)
    if not hasattr(torch.cuda.amp, "custom_fwd"):  # removed in new torch; identity is enough for inference
        torch.cuda.amp.custom_fwd = lambda *a, **k: (lambda f: f)
        torch.cuda.amp.custom_bwd = lambda f: f


def load_official(repo: str):
    _install_stand_ins()
    archs = os.path.join(repo, "basicsr", "archs")
    sys.path.insert(0, archs)
    spec = importlib.util.spec_from_file_location("official_mambacsr_arch", os.path.join(archs, "mambacsr_arch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MambaCSR


CASES = {
    "final-x4 (official)": (dict(PRESETS["final-x4"]), (1, 3, 64, 64)),
    "wo-x4 (official)": (dict(PRESETS["wo-x4"]), (1, 3, 48, 48)),
    "final shallow groups, non-square": (dict(upscale=4, embed_dim=48, depths=[2, 3], depths2=[2], d_state=8, mlp_ratio=2,
                                              upsampler="pixelshuffle", cross_scale_scan=True), (2, 3, 32, 48)),
    "K=4 no interleave, x2, odd size": (dict(upscale=2, embed_dim=36, depths=[2], d_state=4, mlp_ratio=2,
                                             upsampler="pixelshuffle", dual_interleaved_scan=False), (1, 3, 19, 27)),
    "wo x3 3conv": (dict(upscale=3, embed_dim=48, depths=[4], d_state=16, mlp_ratio=2,
                         upsampler="pixelshuffle", resi_connection="3conv", scan_size=4), (1, 3, 24, 40)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-repo", required=True)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    Official = load_official(args.official_repo)
    torch.manual_seed(0)
    print("| case | input | params | max rel err |\n|---|---|---|---|")
    worst = 0.0
    for name in args.cases:
        cfg, shape = CASES[name]
        ref = Official(**cfg).eval()
        with torch.no_grad():  # random, non-trivial values everywhere (LayerNorm/skip scales included)
            for p in ref.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        ours = MambaCSR(**cfg).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.rand(shape)
        with torch.no_grad():
            want, got = ref(x), ours(x)
        err = ((got - want).abs().max() / want.abs().max()).item()
        worst = max(worst, err)
        print(f"| {name} | {tuple(shape)} | {sum(p.numel() for p in ours.parameters()) / 1e6:.2f} M | {err:.2e} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")
    sys.exit(0 if worst < 1e-4 and not math.isnan(worst) else 1)


if __name__ == "__main__":
    main()
