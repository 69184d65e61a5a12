"""The model: output shapes, official names, scan directions, and the scan count per forward."""
import pytest
import torch

from conftest import FINAL_SMALL, WO_SMALL
from mambacsr import PRESETS, MambaCSR
from mambacsr.model import block_directions


@pytest.mark.parametrize("upscale", [2, 3, 4])
@pytest.mark.parametrize("cfg,size", [(WO_SMALL, (20, 36)), (FINAL_SMALL, (32, 48))])
def test_output_shapes(cfg, size, upscale):
    model = MambaCSR(**dict(cfg, upscale=upscale)).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, size[0] * upscale, size[1] * upscale)
    assert torch.isfinite(y).all()


def test_cross_scale_model_refuses_sizes_not_multiple_of_16():
    model = MambaCSR(**FINAL_SMALL).eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 3, 24, 32))


def test_official_parameter_names_and_count():
    sd = MambaCSR(**PRESETS["final-x4"]).state_dict()
    for key in ["conv_first.weight", "patch_embed.norm.weight", "patch_embed2.norm.bias",
                "layers.5.residual_group.blocks.5.self_attention.multi_scan.attn.channel_select.weight",
                "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight",
                "layers.0.residual_group.blocks.0.self_attention.x_proj_weight",
                "layers2.0.residual_group.blocks.5.mlp.fc2.bias", "layers3.0.in_proj_down.weight",
                "layers3.0.conv2d2.weight", "layers3.0.skip_scale2", "conv_after_body.weight",
                "conv_before_upsample.0.weight", "upsample.2.weight", "conv_last.bias"]:
        assert key in sd, key
    assert "mean" not in sd  # a plain attribute in the official code, not in its checkpoints
    assert sd["layers.0.residual_group.blocks.0.self_attention.A_logs"].shape == (2 * 360, 16)
    assert sd["layers3.0.x_proj_weight"].shape == (4, 12 + 32, 360)
    assert sum(v.numel() for v in sd.values()) == 22_051_842


def test_direction_rules_keep_official_quirks():
    assert block_directions(6, 8, True, False)[:4] == [["w8", "w8_flip"], ["c_w8", "c_w8_flip"],
                                                       ["w64", "w64_flip"], ["c_w64", "c_w64_flip"]]
    # cross-scale model, group shallower than 6: 32-wide windows throughout
    assert block_directions(2, 8, True, True) == [["w32", "w32_flip"], ["c_w32", "c_w32_flip"]]
    assert block_directions(1, 8, False, False) == [["w8", "w8_flip", "c_w8", "c_w8_flip"]]


def count_scans(model, x):
    """Shapes of delta (batch, K*C, storage length) for every SelectiveScan call of one forward."""
    import mambacsr.model as model_module

    calls = []
    real = model_module.selective_scan

    def counting(u, delta, *args, **kwargs):
        calls.append(tuple(delta.shape))
        return real(u, delta, *args, **kwargs)

    model_module.selective_scan = counting
    try:
        with torch.no_grad():
            model(x)
    finally:
        model_module.selective_scan = real
    return calls


def test_official_final_x4_makes_43_scans_per_forward():
    model = MambaCSR(**PRESETS["final-x4"]).eval()
    calls = count_scans(model, torch.rand(1, 3, 16, 16))
    assert len(calls) == 43
    # 36 + 6 local-window scans with K=2, one cross-scale scan with K=4 over [half-res ; full-res] tokens
    assert sum(s[1] == 720 for s in calls) == 42
    assert [s for s in calls if s[1] != 720] == [(1, 1440, 16 * 16 * 5 // 4)]


def test_wo_x4_makes_36_scans_per_forward():
    model = MambaCSR(**PRESETS["wo-x4"]).eval()
    assert len(count_scans(model, torch.rand(1, 3, 16, 16))) == 36


def test_training_forward_backward_runs():
    model = MambaCSR(**WO_SMALL).train()
    y = model(torch.rand(2, 3, 16, 16))
    y.mean().backward()
    assert model.layers[0].residual_group.blocks[0].self_attention.A_logs.grad is not None


@pytest.mark.parametrize("size", [(24, 40), (13, 21)])
def test_column_first_blocks_on_the_transposed_grid_give_the_same_output(size, monkeypatch):
    """Compiled forwards scan column-first blocks on the transposed grid (row-first order, coalesced
    reads); forcing that path in eager mode must not change the image. Scans made to matter."""
    from mambacsr.model import LW_SS2D
    model = MambaCSR(**dict(WO_SMALL, scan_size=8)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("x_proj_weight"):
                p.mul_(20)
    assert any(all(d.startswith("c_") for d in m.directions) for m in model.modules() if isinstance(m, LW_SS2D))
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        want = model(x)
        monkeypatch.setattr(LW_SS2D, "transpose_column_scans", True)
        got = model(x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6
