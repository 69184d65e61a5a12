"""Shared fixtures: small configs of both official variants and deterministic seeding."""
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
