"""Shared fixtures: small configs of both official variants, deterministic seeding, and the
runner of the Triton kernel checks."""
import os
import subprocess
import sys

import pytest
import torch

# Small configs that exercise the same code paths as the official ones.
WO_SMALL = dict(upscale=2, embed_dim=24, depths=[2, 2], d_state=4, mlp_ratio=2, upsampler="pixelshuffle",
                resi_connection="1conv", dual_interleaved_scan=True, cross_scale_scan=False)
FINAL_SMALL = dict(upscale=4, embed_dim=24, depths=[2], depths2=[1], d_state=4, mlp_ratio=2,
                   upsampler="pixelshuffle", resi_connection="1conv", dual_interleaved_scan=True,
                   cross_scale_scan=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize(model, scale=0.02):
    """Perturb every parameter so LayerNorm/skip scales are not trivially 1 and 0."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def run_triton_check(code: str, timeout: int = 900) -> None:
    """Run a kernel check script (`DEVICE` in it stands for the device) in a subprocess: on the
    GPU where there is one, else on the CPU through Triton's interpreter, which must be switched
    on before Triton is imported. Skips where Triton is not installed (CI's CPU install)."""
    pytest.importorskip("triton")
    env = dict(os.environ)
    if torch.cuda.is_available():
        device = "cuda"
    else:
        device, env["TRITON_INTERPRET"] = "cpu", "1"
    run = subprocess.run([sys.executable, "-c", code.replace("DEVICE", repr(device))], env=env,
                         capture_output=True, text=True, timeout=timeout)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0 and lines and lines[-1].startswith("ok"), run.stdout + run.stderr
