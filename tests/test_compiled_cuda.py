"""The compiled inference path (`mambacsr.compiled.compile_blocks`, what `mambacsr-rt` runs on
CUDA by default) against the eager model, on the GPU (skips without one).

Weights are made to matter: the scans' B/C projections and the channel-attention branch are
scaled up, so a compiled block that dropped either moves the image far beyond the tolerance.
The negative control checks exactly that: with the scans reduced to D*u the same comparison
must fail.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from conftest import FINAL_SMALL, WO_SMALL  # noqa: E402
from mambacsr import MambaCSR  # noqa: E402
from mambacsr.compiled import compile_blocks  # noqa: E402
from mambacsr.model import CAB  # noqa: E402

TOL = 1e-4  # relative L2, fp32 (TF32 off)


def mattering_model(cfg: dict) -> MambaCSR:
    torch.manual_seed(0)
    model = MambaCSR(**cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("x_proj_weight"):
                p.mul_(20)
        for cab in (m for m in model.modules() if isinstance(m, CAB)):
            cab.cab[2].weight.mul_(200)
    return model.cuda()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("cfg, options", [
    (dict(WO_SMALL, embed_dim=30), {}),
    (dict(FINAL_SMALL, embed_dim=30), {}),
], ids=["wo", "final"])
def test_compiled_forward_matches_eager(cfg, options, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    eager = mattering_model(cfg)
    x = torch.rand(2, 3, 32, 48, device="cuda")
    with torch.inference_mode():
        want = eager(x)
        compiled = compile_blocks(mattering_model(cfg), **options)
        got = compiled(x)
        assert rel(got, want) < TOL
        # negative control: the same model with every scan reduced to D*u must fail this tolerance
        for name, p in compiled.named_parameters():
            if name.endswith("x_proj_weight"):
                p.zero_()
        torch._dynamo.reset()  # frozen weights are constants: recompile with the broken ones
        assert rel(compiled(x), want) > 100 * TOL
