"""Data pipeline, Y-channel metrics, evaluation script and the shipped default model."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambacsr.degrade import QUALITY_FACTORS, center_crop, degrade, jpeg_roundtrip, mod_crop, shrink_to_max_side
from mambacsr.metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))


def smooth_image(h: int = 70, w: int = 90, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth gradients, a few edges, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(xx / 9.0 + c) * np.cos(yy / 13.0 - c) for c in range(3)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] += 60
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- degrade


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_shapes(scale):
    img = smooth_image(70, 90)
    hr, lr = degrade(img, scale, 10)
    assert hr.dtype == lr.dtype == np.uint8
    assert hr.shape == (70 - 70 % scale, 90 - 90 % scale, 3)
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
    assert np.array_equal(hr, img[: hr.shape[0], : hr.shape[1]])


def test_degrade_is_bicubic_then_jpeg():
    img = smooth_image(64, 64)
    hr, lr = degrade(img, 4, 30)
    small = np.asarray(Image.fromarray(hr).resize((16, 16), Image.Resampling.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="JPEG", quality=30, subsampling="4:2:0")
    assert np.array_equal(lr, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    _, lr_plain = degrade(img, 4, None)
    assert np.array_equal(lr_plain, small)


def test_quality_factor_orders_distortion():
    hr, _ = degrade(smooth_image(96, 96), 1, None)
    errors = [psnr(hr, jpeg_roundtrip(hr, qf)) for qf in QUALITY_FACTORS]
    assert errors == sorted(errors), errors  # higher QF -> higher PSNR
    assert QUALITY_FACTORS == (10, 20, 30, 40)


def test_degrade_gray_and_rgba_inputs_and_errors():
    gray = smooth_image(32, 32)[..., 0]
    hr, lr = degrade(gray, 2, 20)
    assert hr.shape == (32, 32, 3) and lr.shape == (16, 16, 3)
    rgba = np.dstack([smooth_image(32, 32), np.full((32, 32), 255, np.uint8)])
    assert degrade(rgba, 2, 20)[0].shape == (32, 32, 3)
    with pytest.raises(ValueError):
        jpeg_roundtrip(smooth_image(16, 16), 0)
    with pytest.raises(ValueError):
        degrade(smooth_image(3, 3), 4, 10)
    with pytest.raises(TypeError):
        degrade(smooth_image(8, 8).astype(np.float32), 2, 10)


def test_source_helpers():
    img = smooth_image(40, 100)
    assert shrink_to_max_side(img, 50).shape == (20, 50, 3)
    assert shrink_to_max_side(img, 0) is img
    assert center_crop(img, 30).shape == (30, 30, 3)
    assert mod_crop(img, 3).shape == (39, 99, 3)


def test_prepare_data_pairs_and_subimages(tmp_path):
    import prepare_data

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(smooth_image(70, 90)).save(src / "a.png")
    Image.fromarray(smooth_image(64, 64, seed=1)).save(src / "b.jpg", quality=95)
    out = tmp_path / "out"
    assert prepare_data.main(["--input", str(src), "--output", str(out), "--scale", "4", "--qf", "10", "40",
                              "--workers", "1"]) == 0
    for name, (h, w) in (("a", (68, 88)), ("b", (64, 64))):
        hr = np.asarray(Image.open(out / "HR" / f"{name}.png"))
        assert hr.shape == (h, w, 3)
        for qf in (10, 40):
            lr = np.asarray(Image.open(out / f"LR_q{qf}" / f"{name}.png"))
            assert np.array_equal(lr, degrade(hr, 4, qf)[1])
    assert not list(out.rglob("*.tmp"))
    sub = tmp_path / "sub"
    assert prepare_data.main(["--input", str(src), "--output", str(sub), "--scale", "4", "--qf", "10",
                              "--crop", "32", "--step", "16", "--workers", "1"]) == 0
    hrs = sorted((sub / "HR").glob("a_s*.png"))
    assert len(hrs) == 4 * 5  # rows at 0,16,32,36; columns at 0,16,32,48,56
    for p in hrs:
        assert Image.open(p).size == (32, 32)
        assert Image.open(sub / "LR_q10" / p.name).size == (8, 8)
    assert prepare_data.main(["--input", str(src), "--output", str(tmp_path / "bad"), "--crop", "30"]) == 2


# --------------------------------------------------------------------------------------- metrics


def test_y_channel_bt601():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    y = rgb_to_y(px)
    assert y[0, 0] == pytest.approx(16.0)
    assert y[0, 1] == pytest.approx(235.0, abs=1e-9)
    assert y[0, 2] == pytest.approx(16 + 65.481)


def test_psnr_known_values():
    a = np.full((20, 20, 3), 100, np.uint8)
    assert psnr_y(a, a) == float("inf")
    b = a.astype(np.float64)
    b[..., :] += 10.0  # Y shifts by 10 * (65.481+128.553+24.966)/255 = 8.588...
    dy = 10 * (65.481 + 128.553 + 24.966) / 255
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255**2 / dy**2))
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))


def test_crop_border_and_shape_errors():
    a = smooth_image(40, 40)
    b = a.copy()
    b[:4] = 0  # damage only the border
    assert psnr_y(a, b, crop_border=4) == float("inf")
    assert psnr_y(a, b, crop_border=0) < 30
    with pytest.raises(ValueError):
        psnr_y(a, a[:30])
    with pytest.raises(ValueError):
        ssim_y(a[:8, :8], a[:8, :8])  # smaller than the 11x11 window


def test_ssim_properties():
    a = smooth_image(48, 48)
    assert ssim_y(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim_y(a, noisy) < 0.99
    assert ssim(a, noisy) == pytest.approx(np.mean([ssim(a[..., c], noisy[..., c]) for c in range(3)]))


def test_metrics_match_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    hr, lr = degrade(smooth_image(96, 120, seed=3), 4, 10)
    up = np.asarray(Image.fromarray(lr).resize((120, 96), Image.Resampling.BICUBIC))
    ya, yb = rgb_to_y(hr)[4:-4, 4:-4], rgb_to_y(up)[4:-4, 4:-4]
    assert psnr_y(hr, up, 4) == pytest.approx(skm.peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-10)
    ref = skm.structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, win_size=11)
    assert ssim_y(hr, up, 4) == pytest.approx(ref, abs=1e-9)


# --------------------------------------------------------------------------------------- evaluate / train


def tiny_model():
    import mambacsr

    torch.manual_seed(0)
    return mambacsr.MambaCSR(upscale=2, embed_dim=24, depths=[1], depths2=[1], d_state=4, mlp_ratio=1.0,
                             upsampler="pixelshuffle", cross_scale_scan=False, img_size=16)


def test_evaluate_smoke(tmp_path, capsys):
    import evaluate
    import mambacsr

    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(smooth_image(48, 40)).save(gt / "x.png")
    ckpt = mambacsr.save_checkpoint(tiny_model(), tmp_path / "tiny.safetensors")
    out_json = tmp_path / "r.json"
    rc = evaluate.main(["--gt", str(gt), "--scale", "2", "--qf", "20", "--no-default", "--ckpt", str(ckpt),
                        "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| Bicubic (JPEG input) |" in text and "tiny.safetensors" in text and "scripts/evaluate.py" in text
    res = json.loads(out_json.read_text())["results"]
    assert len(res) == 2 and all(np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in res)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_evaluate_onnx_row(tmp_path, capsys):
    """An ONNX row through ONNX Runtime, with a plain (no custom op) stand-in model."""
    pytest.importorskip("onnxruntime")
    import evaluate

    class Up(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    onnx_path = tmp_path / "up.onnx"
    torch.onnx.export(Up(), torch.rand(1, 3, 16, 16), str(onnx_path), input_names=["lr"], output_names=["sr"],
                      dynamic_axes={"lr": {2: "h", 3: "w"}, "sr": {2: "H", 3: "W"}}, dynamo=False)
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(smooth_image(40, 36)).save(gt / "x.png")
    assert evaluate.main(["--gt", str(gt), "--scale", "2", "--qf", "30", "--no-default", "--onnx", str(onnx_path)]) == 0
    assert "up.onnx" in capsys.readouterr().out
    # --tta adds the x8 self-ensemble row; nearest upsampling commutes with flips and transposes,
    # so a correct ensemble scores exactly the plain row (a wrong inverse transform would not)
    out_json = tmp_path / "r.json"
    assert evaluate.main(["--gt", str(gt), "--scale", "2", "--qf", "30", "--no-default", "--onnx", str(onnx_path),
                          "--tta", "--json", str(out_json)]) == 0
    res = json.loads(out_json.read_text())["results"]
    assert [r["method"].endswith("x8 self-ensemble") for r in res] == [False, False, True]
    assert res[2]["psnr"] == pytest.approx(res[1]["psnr"], abs=1e-6) and res[1]["psnr"] > res[0]["psnr"] - 10


def test_train_smoke_and_resume(tmp_path, monkeypatch):
    import mambacsr
    import train

    monkeypatch.setenv("MAMBACSR_SCAN", "chunked")  # what train.py sets; restored after this test

    src = tmp_path / "hr"
    src.mkdir()
    Image.fromarray(smooth_image(96, 96)).save(src / "a.png")
    out = tmp_path / "run"
    common = ["--hr-dir", str(src), "--scale", "2", "--embed-dim", "24", "--depths", "1", "--d-state", "4",
              "--patch", "16", "--batch", "2", "--log-every", "1", "--out", str(out), "--device", "cpu",
              "--val-dir", str(src / "a.png"), "--val-crop", "32"]
    assert train.main(common + ["--max-steps", "2", "--final", str(tmp_path / "m.safetensors")]) == 0
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 2 and {"model", "ema", "optimizer", "config"} <= set(state)
    model = mambacsr.load_model(tmp_path / "m.safetensors")
    assert next(model.parameters()).dtype == torch.float32 and model.config["upscale"] == 2
    assert train.main(common + ["--max-steps", "3", "--resume"]) == 0
    assert torch.load(out / "state.pt", map_location="cpu", weights_only=False)["step"] == 3
    assert (out / "val.jsonl").read_text().count("\n") == 2
    fresh = common[:-4] + ["--out", str(tmp_path / "fresh"), "--degrade", "fresh", "--hr-scales", "0.8", "1"]
    assert train.main(fresh + ["--max-steps", "2"]) == 0
    # a mistyped held-out folder is an error naming it, not an empty held-out set
    with pytest.raises(SystemExit, match=r"error: --val-dir \S*nowhere: no such file or folder"):
        train.main(common + ["--max-steps", "4", "--resume", "--val-dir", str(tmp_path / "nowhere")])


def test_train_degraded_variants_move_the_jpeg_grid():
    """--hr-scales / --grid-shifts: each copy is the same content at another size or position,
    and a moved copy carries other JPEG artefacts than the first one on the same pixels."""
    import argparse

    import train

    img = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    args = argparse.Namespace(hr_scales=[1.0, 0.5], grid_shifts=2, qf=[10], scale=2, channel_orders=1)
    pairs = train.degraded_variants(img, args, np.random.default_rng(0))
    assert len(pairs) == 4
    for lr, hr in pairs:
        assert (lr.shape[0] * 2, lr.shape[1] * 2) == hr.shape[:2]
    (lr0, hr0), (lr1, hr1) = pairs[:2]
    dy, dx = divmod(int(np.random.default_rng(0).integers(1, 64)), 8)
    assert hr0.shape == (96, 128, 3) and np.array_equal(hr1, hr0[2 * dy:, 2 * dx:])
    inner = (slice(8, -8), slice(8, -8))
    assert not np.array_equal(lr1[inner], lr0[dy:, dx:][inner])  # the 8x8 grid moved
    assert pairs[2][1].shape == (48, 64, 3) and pairs[3][1].shape[0] <= 48 and pairs[3][1].shape[1] <= 64 and pairs[3][1].shape != (48, 64, 3)


def test_train_channel_orders_swap_before_the_jpeg(tmp_path, capsys):
    """--channel-orders: a colour photo's copies are the photo with its channels swapped and then
    degraded (not the degraded pair swapped: JPEG's luma/chroma split and 4:2:0 make those
    differ); a grey photo gets one copy, since its orders are all the same picture."""
    import argparse

    import train
    from mambacsr.degrade import degrade

    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((128, 96), Image.Resampling.BICUBIC))
    args = argparse.Namespace(hr_scales=[1.0], grid_shifts=1, qf=[10], scale=2, channel_orders=3)
    pairs = train.degraded_variants(img, args, np.random.default_rng(0))
    assert len(pairs) == 3
    for (lr, hr), order in zip(pairs, train.CHANNEL_ORDERS):
        want_hr, want_lr = degrade(np.ascontiguousarray(img[..., order]), 2, 10)
        assert np.array_equal(hr, img[..., order]) and np.array_equal(hr, want_hr) and np.array_equal(lr, want_lr)
    assert not np.array_equal(pairs[1][0], pairs[0][0][..., train.CHANNEL_ORDERS[1]])
    grey = np.repeat(img[..., :1], 3, axis=2)
    assert len(train.degraded_variants(grey, args, np.random.default_rng(0))) == 1
    # already-degraded pairs cannot be swapped before their JPEG: an error, not a silent no-op
    with pytest.raises(SystemExit):
        train.main(["--pairs-dir", str(tmp_path), "--channel-orders", "2", "--out", str(tmp_path / "o")])
    assert "--pairs-dir pairs are already degraded" in capsys.readouterr().err


def test_train_fresh_sampler_pairs_are_aligned_and_reproducible():
    """--degrade fresh: each LR patch is the bicubic downscale of its HR patch (here without JPEG,
    to see the alignment; one LR pixel off fails), a batch depends only on (seed, index), and
    JPEG artefacts differ between batches."""
    import train
    from mambacsr.degrade import bicubic_resize

    rng = np.random.default_rng(1)
    img = np.asarray(Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).resize(
        (240, 200), Image.Resampling.BICUBIC))
    plain = train.FreshSampler([img], 2, 16, [None], (0.6, 1.0), seed=3, workers=1)
    lr, hr = plain.make_batch(0, 4)
    assert lr.shape == (4, 16, 16, 3) and hr.shape == (4, 32, 32, 3)
    inner = (slice(3, -3), slice(3, -3))
    for a, b in zip(lr, hr):
        down = bicubic_resize(np.ascontiguousarray(b), (16, 16)).astype(int)
        assert np.abs(a.astype(int) - down)[inner].max() <= 2
        assert np.abs(a[:, 1:].astype(int) - down[:, :-1])[inner].max() > 2  # one LR pixel off
    assert all(np.array_equal(x, y) for x, y in zip(plain.make_batch(0, 4), (lr, hr)))
    assert not np.array_equal(plain.make_batch(1, 4)[1], hr)
    jpeg = train.FreshSampler([img], 2, 16, [10], (1.0, 1.0), seed=3, workers=2)
    first, again = jpeg.sample(4), jpeg.sample(4)
    assert first[0].shape == (4, 16, 16, 3) and not np.array_equal(first[0], again[0])


# --------------------------------------------------------------------------------------- shipped model


def test_pretrained_missing_message(monkeypatch, tmp_path):
    from mambacsr import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        pretrained.default_checkpoint()
    msg = str(e.value)
    assert "\n" not in msg and "--ckpt" in msg and "--onnx" in msg and "--engine" in msg


def test_pretrained_default_model_upscales():
    from mambacsr import pretrained

    try:
        path = pretrained.default_checkpoint()
    except FileNotFoundError:
        pytest.skip("no default model shipped in this checkout")
    assert path.name == pretrained.DEFAULT_MODEL_NAME and path.stat().st_size < 10e6
    model = pretrained.load_default_model()
    assert model.config["upscale"] == 4
    _, lr = degrade(smooth_image(96, 96), 4, 10)
    x = torch.from_numpy(lr[:16, :16].copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, 3, 64, 64) and torch.isfinite(y).all()
