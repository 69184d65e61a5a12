"""mambacsr-rt upscale --ray: same bytes as one process, bad inputs reported, a killed worker loses
no image, and a clear exit 2 without Ray. Skipped where Ray is not installed."""

import builtins
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from test_runtime_cli import run_cli, standin_onnx, write_rgb

N_IMAGES = 6


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray (2 CPUs, 100 MB object store, no dashboard); the CLI uses it as it is."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return standin_onnx(tmp_path_factory.mktemp("m") / "dyn.onnx")[0]


@pytest.fixture
def images(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(N_IMAGES):
        write_rgb(src / ("sub" if i % 2 else ".") / f"p{i}.png", 24 + 4 * i, 36, seed=i)
    return src


def _tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_ray_outputs_match_one_process_and_skip_existing(tmp_path, capsys, ray_local, onnx_model, images):
    flags = ["--onnx", onnx_model, "--tile", "16", "--overlap", "4", "-f", "webp", "--quality", "100"]
    code, _, _ = run_cli(capsys, "upscale", images, "-o", tmp_path / "one", *flags, "-q")
    assert code == 0
    code, stdout, err = run_cli(capsys, "upscale", images, "-o", tmp_path / "ray", *flags, "--ray",
                                "--workers", "2")
    assert code == 0, err
    one, dist = _tree(tmp_path / "one"), _tree(tmp_path / "ray")
    assert len(one) == N_IMAGES and dist == one  # same names, same bytes
    assert err.count(" done ") == N_IMAGES  # one progress line per finished file
    assert f"{N_IMAGES} file(s) written" in stdout
    assert not [p for p in (tmp_path / "ray").rglob(".*")]  # no temporary file left
    # --skip-existing: a complete output is kept, a 0-byte one is redone
    (tmp_path / "ray" / "p0.webp").write_bytes(b"")
    code, stdout, _ = run_cli(capsys, "upscale", images, "-o", tmp_path / "ray", *flags, "--ray", "-q",
                              "--skip-existing")
    assert code == 0 and "1 file(s) written" in stdout and f"{N_IMAGES - 1} skipped" in stdout
    assert _tree(tmp_path / "ray") == one


def test_ray_bad_file_reported_exit_1(tmp_path, capsys, ray_local, onnx_model, images):
    (images / "broken.png").write_bytes((images / "p0.png").read_bytes()[:60])
    (images / "text.jpg").write_text("not an image")
    code, stdout, err = run_cli(capsys, "upscale", images, "-o", tmp_path / "out", "--onnx", onnx_model,
                                "--tile", "16", "--ray")
    assert code == 1
    assert "FAILED" in err and "broken.png" in err and "text.jpg" in err and "Traceback" not in err
    assert "mambacsr-rt-" not in err  # the worker's temporary copy is not what the user is told about
    assert f"{N_IMAGES} file(s) written" in stdout and "2 failed" in stdout
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == sorted(
        f"p{i}.png" for i in range(N_IMAGES))


def _busy_worker_pids() -> list[int]:
    """Processes whose Ray title says they are running UpscaleWorker.upscale right now."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes()
        except OSError:  # gone meanwhile
            continue
        if title.startswith(b"ray::UpscaleWorker.upscale"):
            pids.append(int(cmdline.parent.name))
    return sorted(pids)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker through /proc")
def test_ray_worker_killed_mid_run_loses_no_image(tmp_path, capsys, ray_local, onnx_model):
    src = tmp_path / "in"
    src.mkdir()
    n = 12
    for i in range(n):
        write_rgb(src / f"k{i:02d}.png", 96, 96, seed=i)
    out = tmp_path / "out"
    flags = ["--onnx", onnx_model, "--tile", "16", "--overlap", "4", "--tta"]  # slow enough to be killed in
    killed, finished = {}, threading.Event()

    def killer():
        # A worker busy on an image is found by the title Ray gives its process, not by asking the
        # actor: a call to a busy actor waits behind the images queued on it.
        while not finished.is_set():
            pids = _busy_worker_pids()
            if pids and any(out.glob("*.png")):  # workers are up and past their first image
                killed["before"] = len(list(out.glob("*.png")))
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    try:
        code, stdout, err = run_cli(capsys, "upscale", src, "-o", out, *flags, "--ray", "--workers", "2")
    finally:
        finished.set()
        t.join()
    assert killed, "no worker was killed: the run ended first"
    assert killed["before"] < n, "the worker was killed after the last image: nothing was tested"
    assert code == 0, err
    assert f"{n} file(s) written" in stdout
    assert err.count(" done ") == n  # each image written once
    code, _, _ = run_cli(capsys, "upscale", src, "-o", tmp_path / "one", *flags, "-q")
    assert _tree(out) == _tree(tmp_path / "one")


def test_ray_missing_exits_2_with_install_line(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    write_rgb(tmp_path / "a.png")
    code, stdout, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--ray")
    assert code == 2
    assert err.strip().count("\n") == 0 and 'pip install -e ".[ray]"' in err
    assert not (tmp_path / "out").exists()


def test_ray_address_swallowing_an_input_is_a_usage_error(tmp_path, capsys):
    write_rgb(tmp_path / "a.png")
    write_rgb(tmp_path / "b.png")
    code, _, err = run_cli(capsys, "upscale", tmp_path / "b.png", "--ray", tmp_path / "a.png", "-o", tmp_path / "out")
    assert code == 2 and "--ray=ADDRESS" in err


def test_worker_flags_without_ray_are_a_usage_error(tmp_path, capsys):
    write_rgb(tmp_path / "a.png")
    code, _, err = run_cli(capsys, "upscale", tmp_path / "a.png", "-o", tmp_path / "out", "--workers", "2")
    assert code == 2 and "add --ray" in err and not (tmp_path / "out").exists()
