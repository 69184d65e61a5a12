"""mambacsr-rt CLI: upscale (files/folders/globs, bad inputs, safety), build and bench, user errors."""

import os
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from runtime.cli import collect_inputs, main
from runtime.imageio import encode_png16, read_image

TINY = dict(upscale=2, embed_dim=24, depths=[1], depths2=[1], d_state=4, scan_size=8, mlp_ratio=2,
            upsampler="pixelshuffle", resi_connection="1conv", dual_interleaved_scan=True,
            cross_scale_scan=False)


def standin_onnx(path, scale=2, tile=None, batch=None, seed=0):
    """Conv3x3 + DepthToSpace (= PixelShuffle) ONNX, fixed or dynamic shapes."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((3 * scale * scale, 3, 3, 3)) * 0.1).astype(np.float32)
    w[:, :, 1, 1] += np.repeat(np.eye(3, dtype=np.float32), scale * scale, axis=0)  # ~ nearest upscale
    b = np.zeros(3 * scale * scale, np.float32)
    h = tile if tile else "h"
    wd = tile if tile else "w"
    bs = batch if batch else "b"
    oh = tile * scale if tile else "oh"
    ow = tile * scale if tile else "ow"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("DepthToSpace", ["c"], ["output"], blocksize=scale, mode="CRD")],
        "standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [bs, 3, h, wd])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [bs, 3, oh, ow])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"mambacsr.scale": str(scale), "mambacsr.tile": str(tile or 0)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, w, b


def write_rgb(path, h=20, w=28, seed=0):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def dyn_onnx(tmp_path_factory):
    return standin_onnx(tmp_path_factory.mktemp("m") / "dyn.onnx")[0]


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory):
    return standin_onnx(tmp_path_factory.mktemp("m") / "fixed.onnx", tile=16, batch=2)[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from mambacsr import MambaCSR, save_checkpoint
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    save_checkpoint(MambaCSR(**TINY).eval(), str(path))
    return path


def test_mixed_folder_good_processed_bad_reported(tmp_path, capsys, fixed_onnx):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_rgb(src / "good.png")
    write_rgb(src / "sub" / "good2.jpg", seed=1)
    (src / "sub" / "deep16.png").write_bytes(encode_png16(
        np.random.default_rng(2).integers(0, 65536, (9, 11, 3)).astype(np.uint16)))
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    (src / "trunc.jpg").write_bytes((src / "sub" / "good2.jpg").read_bytes()[:200])
    good = (src / "good.png").read_bytes()
    (src / "sub" / "trunc.png").write_bytes(good[: len(good) // 2])
    (src / "notes.txt").write_text("ignored: not an image name")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "upscale", src, "-o", out, "--onnx", fixed_onnx, "-q")
    assert code == 1
    for bad in ("empty.png", "text.png", "trunc.jpg", "trunc.png"):
        assert bad in err
    assert "Traceback" not in err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert written == ["good.png", "sub", "sub/deep16.png", "sub/good2.png"]
    assert read_image(out / "good.png").size == (56, 40)
    assert read_image(out / "sub" / "deep16.png").pixels.dtype == np.uint16
    assert "3 file(s) written" in stdout and "4 failed" in stdout


def test_all_good_exit_zero_globs_formats(tmp_path, capsys, dyn_onnx):
    for i in range(3):
        write_rgb(tmp_path / f"p{i}.png", seed=i)
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "upscale", str(tmp_path / "p*.png"), "-o", out, "--onnx", dyn_onnx,
                              "--format", "webp", "--tile", "16", "--overlap", "4", "--batch", "3", "--tta", "-q")
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == ["p0.webp", "p1.webp", "p2.webp"]
    assert "MP/s" in stdout


def test_matches_direct_tiling(tmp_path, capsys, dyn_onnx):
    a = write_rgb(tmp_path / "x.png", 30, 44)
    code, _, _ = run_cli(capsys, "upscale", tmp_path / "x.png", "-o", tmp_path / "o", "--onnx", dyn_onnx,
                         "--tile", "16", "--overlap", "4", "-q")
    assert code == 0
    from runtime.backends.ort_backend import OrtBackend
    from runtime.tiling import Tiler
    ref = Tiler(2, 16, overlap=4).run(a.transpose(2, 0, 1), OrtBackend(dyn_onnx).run)
    expect = np.rint(np.clip(ref, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "x.png").pixels, expect)


def test_refuses_to_overwrite_input(tmp_path, capsys, dyn_onnx):
    write_rgb(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path, "--onnx", dyn_onnx, "-q")
    assert code == 1 and "overwrite" in err
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temp files either


def test_skip_existing_and_name_collisions(tmp_path, capsys, dyn_onnx):
    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "a.png")
    write_rgb(src / "a.jpg")  # same stem: second one would collide
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "upscale", src, "-o", out, "--onnx", dyn_onnx, "-q")
    assert code == 1 and "also the output of" in err
    mtime = (out / "a.png").stat().st_mtime_ns
    code, stdout, _ = run_cli(capsys, "upscale", src / "a.png", "-o", out, "--onnx", dyn_onnx,
                              "--skip-existing", "-q")
    assert code == 0 and "1 skipped" in stdout and (out / "a.png").stat().st_mtime_ns == mtime


def test_missing_inputs_reported(tmp_path, capsys, dyn_onnx):
    write_rgb(tmp_path / "a.png")
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", tmp_path / "nope.png", "-o", tmp_path / "o",
                           "--onnx", dyn_onnx, "-q")
    assert code == 1 and "nope.png" in err and (tmp_path / "o" / "a.png").is_file()


def test_torch_checkpoint_blend_and_official(tmp_path, capsys, tiny_ckpt):
    write_rgb(tmp_path / "a.png", 24, 20)
    for extra in (["--tile", "16", "--overlap", "4", "--batch", "2"], ["--tile-mode", "official"]):
        out = tmp_path / ("o" + extra[1])
        code, stdout, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", out, "--ckpt", tiny_ckpt,
                                    "--backend", "torch", *extra)
        assert code == 0, err
        assert "backend" in err or "torch" in err
        assert read_image(out / "a.png").size == (40, 48)


@pytest.mark.parametrize("argv,needle", [
    (["--onnx", "FIXED", "--tile", "32"], "--tile 16"),
    (["--onnx", "FIXED", "--tile-mode", "official"], "official"),
    (["--onnx", "missing.onnx"], "no such file"),
    (["--engine", "FAKE"], "not installed"),
    (["--onnx", "DYN", "--backend", "torch"], "--ckpt"),
    (["--onnx", "DYN", "--tile", "16", "--overlap", "16"], "--overlap"),
    (["--onnx", "DYN", "--device", "cuda"], "--device cpu"),
    (["--ckpt", "CKPT", "--precision", "fp16", "--device", "cpu"], "--precision fp32"),
    (["--onnx", "DYN", "--ckpt", "CKPT"], "give one model"),
])
def test_user_errors_are_one_line(tmp_path, capsys, fixed_onnx, dyn_onnx, tiny_ckpt, argv, needle):
    write_rgb(tmp_path / "a.png")
    fake = tmp_path / "fake.engine"
    fake.write_bytes(b"x")
    sub = {"FIXED": str(fixed_onnx), "DYN": str(dyn_onnx), "FAKE": str(fake), "CKPT": str(tiny_ckpt)}
    argv = [sub.get(a, a) for a in argv]
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", *argv, "-q")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("mambacsr-rt: error:") and needle in lines[0], err
    assert not (tmp_path / "o" / "a.png").exists()


def test_no_model_and_no_default_names_the_flags(tmp_path, capsys, monkeypatch):
    write_rgb(tmp_path / "a.png")
    import mambacsr.pretrained as pretrained
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "no-weights")  # not shipped
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 2
    assert "--ckpt" in err and "--onnx" in err and "--engine" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "mambacsr.pretrained", None)  # an install without the module
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 2
    assert "--ckpt" in err and "--onnx" in err and "--engine" in err and len(err.strip().splitlines()) == 1


def test_default_model_is_used_when_shipped(tmp_path, capsys, monkeypatch, tiny_ckpt):
    write_rgb(tmp_path / "a.png", 16, 16)
    import mambacsr.pretrained as pretrained
    monkeypatch.setattr(pretrained, "default_checkpoint", lambda: tiny_ckpt)
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 0, err
    assert "shipped default" in err and read_image(tmp_path / "o" / "a.png").size == (32, 32)


def test_collect_inputs_mirrors_structure(tmp_path):
    (tmp_path / "d" / "x" / "y").mkdir(parents=True)
    for p in ("d/a.png", "d/x/b.JPG", "d/x/y/c.webp", "d/x/.hidden.png", "d/readme.md"):
        (tmp_path / p).write_bytes(b"")
    items, missing = collect_inputs([str(tmp_path / "d"), str(tmp_path / "d" / "a.png"), str(tmp_path / "zz*.png")])
    assert [str(r) for _, r in items] == ["a", "x/b", "x/y/c"]
    assert len(missing) == 1
    items, _ = collect_inputs([str(tmp_path / "d" / "**" / "*.webp")])
    assert [str(r) for _, r in items] == ["x/y/c"]


def test_bench_prints_markdown_table(capsys, dyn_onnx):
    code, out, _ = run_cli(capsys, "bench", "--onnx", dyn_onnx, "--tile", "16,32", "--batch", "1,2",
                           "--iters", "2", "--warmup", "0")
    assert code == 0
    assert "| backend | device | precision | tile | batch |" in out
    assert out.count("| ort | cpu |") == 4
    assert "command: `mambacsr-rt bench --onnx" in out


def test_build_without_tensorrt_prints_trtexec(capsys, fixed_onnx):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT installed: the build path is exercised by the trt tests")
    except ImportError:
        pass
    code, out, err = run_cli(capsys, "build", "--onnx", fixed_onnx, "--batch", "2", "--precision", "fp16",
                             "--plugin", fixed_onnx)
    assert code == 2 and "TensorRT not installed" in err
    assert "trtexec --onnx=" in out and "--fp16" in out and "--dynamicPlugins=" in out
    code, out, err = run_cli(capsys, "build", "--onnx", fixed_onnx, "--tile", "32", "--batch", "2")
    assert code == 2 and "--tile 16" in err


def test_official_mode_on_dynamic_onnx(tmp_path, capsys, dyn_onnx):
    a = write_rgb(tmp_path / "a.png", 200, 30)
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "o", "--onnx", dyn_onnx,
                           "--tile-mode", "official", "-q")
    assert code == 0, err
    from runtime.backends.ort_backend import OrtBackend
    from runtime.tiling import Tiler
    ref = Tiler(2, None, mode="official").run(a.transpose(2, 0, 1), OrtBackend(dyn_onnx).run)
    expect = np.rint(np.clip(ref, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "a.png").pixels, expect)


def test_output_folder_inside_input_folder_is_not_rescanned(tmp_path, capsys, dyn_onnx):
    write_rgb(tmp_path / "a.png")
    for _ in range(2):
        code, stdout, _ = run_cli(capsys, "upscale", tmp_path, "-o", tmp_path / "out", "--onnx", dyn_onnx, "-q")
        assert code == 0 and "1 file(s) written" in stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
