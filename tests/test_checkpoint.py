"""Checkpoint loading: official formats, safetensors, config inference, and clear errors."""
import os

import pytest
import torch
import yaml

from conftest import FINAL_SMALL, WO_SMALL, randomize
from mambacsr import MambaCSR, infer_config, load_model, save_checkpoint
from mambacsr.checkpoint import CheckpointError


def same_output(a, b, size=(32, 32)):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("wrap", ["params_ema", "params", "bare", "module"])
def test_official_pth_formats_load_strict(tmp_path, wrap):
    model = randomize(MambaCSR(**WO_SMALL)).eval()
    sd = model.state_dict()
    obj = {"bare": sd, "module": {f"module.{k}": v for k, v in sd.items()}}.get(wrap, {wrap: sd})
    torch.save(obj, tmp_path / "m.pth")
    loaded = load_model(tmp_path / "m.pth", config=WO_SMALL)
    assert same_output(model, loaded)


def test_official_yaml_config(tmp_path):
    model = randomize(MambaCSR(**FINAL_SMALL)).eval()
    torch.save({"params_ema": model.state_dict()}, tmp_path / "m.pth")
    opt = {"name": "x", "network_g": dict(type="MambaCSR", img_size=64, **FINAL_SMALL)}
    (tmp_path / "opt.yml").write_text(yaml.safe_dump(opt))
    assert same_output(model, load_model(tmp_path / "m.pth", config=str(tmp_path / "opt.yml")))


@pytest.mark.parametrize("cfg", [WO_SMALL, FINAL_SMALL,
                                 dict(WO_SMALL, upscale=3, resi_connection="3conv", dual_interleaved_scan=False)])
def test_inferred_config_rebuilds_the_same_model(tmp_path, cfg):
    model = randomize(MambaCSR(**cfg)).eval()
    torch.save({"params_ema": model.state_dict()}, tmp_path / "m.pth")
    inferred = infer_config(model.state_dict())
    for key in ("upscale", "embed_dim", "depths", "d_state", "resi_connection", "cross_scale_scan", "mlp_ratio"):
        assert inferred[key] == cfg[key], key
    if cfg.get("cross_scale_scan"):
        assert inferred["depths2"] == cfg["depths2"]
    assert same_output(model, load_model(tmp_path / "m.pth"))


def test_safetensors_round_trip_keeps_config(tmp_path):
    model = randomize(MambaCSR(**FINAL_SMALL)).eval()
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    assert same_output(model, loaded)
    save_checkpoint(model, tmp_path / "h.safetensors", dtype=torch.float16)
    assert os.path.getsize(tmp_path / "h.safetensors") < os.path.getsize(tmp_path / "m.safetensors") * 0.6
    half = load_model(tmp_path / "h.safetensors")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (half(x) - model(x)).abs().max() < 1e-2
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_truncated_file_is_a_clear_error(tmp_path):
    model = MambaCSR(**WO_SMALL)
    save_checkpoint(model, tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth.*complete"):
        load_model(tmp_path / "cut.pth")
    save_checkpoint(model, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_model(tmp_path / "cut.safetensors")


def test_wrong_keys_are_named(tmp_path):
    sd = MambaCSR(**WO_SMALL).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["conv_last.bias"]
    torch.save({"params_ema": sd}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"missing 1 keys: conv_last.bias.*unexpected 1 keys: extra.weight"):
        load_model(tmp_path / "m.pth", config=WO_SMALL)


def test_wrong_config_names_shapes(tmp_path):
    torch.save({"params_ema": MambaCSR(**WO_SMALL).state_dict()}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "m.pth", config=dict(WO_SMALL, embed_dim=48))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        torch.save({"params_ema": {"x": torch.zeros(1)}, "payload": _Exploit(str(marker))}, f,
                   pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refusing .*execute code"):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_file_and_not_a_model(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pth")
    torch.save({"params_ema": {"foo": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a MambaCSR state dict"):
        load_model(tmp_path / "other.pth")
