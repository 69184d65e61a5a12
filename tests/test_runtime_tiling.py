"""Tiling (runtime/tiling.py): exactness, blend quality, the official partitioning, TTA, errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime.errors import UserError
from runtime.plan import auto_tile
from runtime.tiling import Tiler
from runtime.upscale import tta_fn

TINY = dict(upscale=2, embed_dim=24, depths=[2], depths2=[1], d_state=4, scan_size=8, mlp_ratio=2,
            upsampler="pixelshuffle", resi_connection="1conv", dual_interleaved_scan=True,
            cross_scale_scan=False)


def natural_image(h, w, seed=0):
    """A procedural 'photo': smooth gradients, soft discs, edges, a little texture; (3, H, W) in [0,1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / (7 + 5 * c) + y / (11 + 3 * c) + c) for c in range(3)])
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(4, min(h, w) / 3))
        col = rng.uniform(0, 1, (3, 1, 1)).astype(np.float32)
        m = 1 / (1 + np.exp(np.minimum(((y - cy) ** 2 + (x - cx) ** 2) ** 0.5 - r, 50)))
        img = img * (1 - m) + col * m
    img[:, :, w // 3: w // 3 + 2] = 0.05  # a hard vertical edge
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def nearest_fn(scale):
    return lambda b: b.repeat(scale, axis=2).repeat(scale, axis=3)


class ConvNet(torch.nn.Module):
    """Stand-in SR net with a 7x7 receptive field: conv-relu-conv then pixel shuffle."""

    def __init__(self, scale=2):
        super().__init__()
        self.scale = scale
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 3 * scale * scale, 3, padding=1)
        self.ps = torch.nn.PixelShuffle(scale)

    def forward(self, x):
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return up + 0.1 * self.ps(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))


def torch_fn(model):
    def run(b):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(b))).numpy()
    return run


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(0)
    return ConvNet(2).eval()


@pytest.fixture(scope="module")
def tiny_model():
    from mambacsr import MambaCSR
    torch.manual_seed(0)
    return MambaCSR(**TINY).eval()


# ------------------------------------------------------------------------------------ blend
@pytest.mark.parametrize("shape", [(40, 56), (17, 19), (64, 64)])
def test_one_tile_equals_whole_image(convnet, shape):
    img = natural_image(*shape)
    fn = torch_fn(convnet)
    whole = fn(img[None])[0]
    out = Tiler(2, 64, overlap=8).run(img, fn)
    assert out.shape == whole.shape
    np.testing.assert_array_equal(out, whole)


def test_one_tile_equals_whole_image_real_model(tiny_model):
    img = natural_image(40, 48, seed=1)
    fn = torch_fn(tiny_model)
    out = Tiler(2, 64, overlap=8).run(img, fn)
    np.testing.assert_array_equal(out, fn(img[None])[0])


@pytest.mark.parametrize("tile,overlap,batch", [(16, 4, 1), (16, 0, 3), (24, 8, 4), (20, 19, 2)])
def test_pointwise_model_is_exact_for_any_tiling(tile, overlap, batch):
    img = natural_image(53, 71, seed=2)
    out = Tiler(3, tile, overlap=overlap, batch=batch).run(img, nearest_fn(3))
    np.testing.assert_allclose(out, nearest_fn(3)(img[None])[0], atol=1e-5)


def test_integer_output_and_input(convnet):
    img = natural_image(50, 37, seed=3)
    u8 = np.rint(img * 255).astype(np.uint8)
    ref = Tiler(2, 16, overlap=4).run(u8.astype(np.float32) / 255, torch_fn(convnet))
    out = np.zeros((3, 100, 74), np.uint16)
    Tiler(2, 16, overlap=4).run(u8, torch_fn(convnet), out=out)
    np.testing.assert_array_equal(out, np.rint(np.clip(ref, 0, 1) * 65535).astype(np.uint16))


def test_blend_close_to_whole_image(convnet):
    img = natural_image(96, 120, seed=4)
    fn = torch_fn(convnet)
    whole = fn(img[None])[0]
    for window in ("sine", "linear"):
        out = Tiler(2, 32, overlap=8, window=window, batch=4).run(img, fn)
        assert psnr(out, whole) > 50, window
    hard = Tiler(2, 32, overlap=0).run(img, fn)
    assert psnr(Tiler(2, 32, overlap=8).run(img, fn), whole) > psnr(hard, whole)


def test_blend_psnr_real_model(tiny_model):
    img = natural_image(48, 64, seed=5)
    fn = torch_fn(tiny_model)
    whole = fn(img[None])[0]
    out = Tiler(2, 32, overlap=8, batch=3).run(img, fn)
    assert psnr(np.clip(out, 0, 1), np.clip(whole, 0, 1)) > 40


def test_fixed_tile_pads_small_images():
    seen = []

    def fn(b):
        seen.append(b.shape)
        return nearest_fn(2)(b)

    img = natural_image(10, 30)
    out = Tiler(2, 16, overlap=4, fixed=True).run(img, fn)
    assert all(s[2:] == (16, 16) for s in seen)
    np.testing.assert_allclose(out, nearest_fn(2)(img[None])[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (1, 40), (15, 9)])
def test_tiny_images_are_padded_to_the_minimum_tile(shape):
    """A 1x1 or 3x2 image is never fed to the model alone: it is reflect-padded to MIN_TILE, and
    the output is cropped back (exact for a pointwise model)."""
    from runtime.plan import MIN_TILE
    seen = []

    def fn(b):
        seen.append(b.shape)
        return nearest_fn(2)(b)

    img = natural_image(*shape)
    out = Tiler(2, 64, overlap=8).run(img, fn)
    assert all(s[2] >= MIN_TILE and s[3] >= MIN_TILE for s in seen), seen
    np.testing.assert_allclose(out, nearest_fn(2)(img[None])[0], atol=1e-6)


def test_multiple_rounds_small_tiles_up():
    seen = []

    def fn(b):
        seen.append(b.shape)
        return nearest_fn(2)(b)

    img = natural_image(20, 70)
    out = Tiler(2, 32, overlap=8, multiple=16).run(img, fn)
    assert all(s[2] % 16 == 0 and s[3] % 16 == 0 for s in seen)
    np.testing.assert_allclose(out, nearest_fn(2)(img[None])[0], atol=1e-6)


def test_memory_is_a_strip_of_tiles():
    """A tall image: the float accumulator holds one row of tiles, not the image."""
    img = np.zeros((3, 2000, 40), np.uint8)
    out = np.zeros((3, 4000, 80), np.uint8)
    calls = []

    def fn(b):
        calls.append(1)
        return np.ones((b.shape[0], 3, b.shape[2] * 2, b.shape[3] * 2), np.float32)

    import tracemalloc
    tracemalloc.start()
    Tiler(2, 32, overlap=8, batch=8).run(img, fn, out=out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.min() == 255
    assert peak < 4_000_000  # the float image alone would be 3*4000*80*4 = 3.8 MB, plus weights


@pytest.mark.parametrize("kw,match", [
    (dict(tile=0), "impossible tile"), (dict(tile=20, multiple=16), "multiple of 16"),
    (dict(tile=16, overlap=16), "overlap"), (dict(tile=None), "tile="),
    (dict(tile=16, mode="official", fixed=True), "official"), (dict(tile=16, mode="x"), "tile mode"),
])
def test_impossible_settings_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        Tiler(2, **kw)


def test_auto_tile():
    assert auto_tile(None, 1000.0, 16) == (64, 1)
    t, b = auto_tile(8 << 30, 60 * 180 * 4, 16)
    assert t % 16 == 0 and 32 <= t <= 256 and 1 <= b <= 8


# ------------------------------------------------------------------------------------ official
def official_reference(lq: torch.Tensor, net, scale: int, padding_size: int = 64) -> torch.Tensor:
    """Direct re-implementation of the official MambaCSRModel.test partitioning (torch)."""
    _, c, h, w = lq.shape
    nh, nw = h // 192 + 1, w // 192 + 1
    mph = nh - h % nh if h % nh else 0
    mpw = nw - w % nw if w % nw else 0
    img = F.pad(lq, (0, mpw, 0, mph), "reflect")
    _, _, H, W = img.shape
    sh, sw = H // nh, W // nw
    shave_h, shave_w = sh // 4, sw // 4
    rows, cols = H // sh, W // sw
    result = torch.zeros(1, c, H * scale, W * scale)
    for i in range(rows):
        for j in range(cols):
            top = slice(i * sh - (shave_h if i > 0 else 0), (i + 1) * sh + (shave_h if i < rows - 1 else 0))
            left = slice(j * sw - (shave_w if j > 0 else 0), (j + 1) * sw + (shave_w if j < cols - 1 else 0))
            chop = img[..., top, left]
            _, _, h_old, w_old = chop.shape
            h_pad = (h_old // padding_size + 1) * padding_size - h_old
            w_pad = (w_old // padding_size + 1) * padding_size - w_old
            chop = torch.cat([chop, torch.flip(chop, [2])], 2)[:, :, :h_old + h_pad, :]
            chop = torch.cat([chop, torch.flip(chop, [3])], 3)[:, :, :, :w_old + w_pad]
            with torch.no_grad():
                out = net(chop)[..., :h_old * scale, :w_old * scale]
            _top = slice(0, sh * scale) if i == 0 else slice(shave_h * scale, (shave_h + sh) * scale)
            _left = slice(0, sw * scale) if j == 0 else slice(shave_w * scale, (shave_w + sw) * scale)
            result[..., i * sh * scale:(i + 1) * sh * scale, j * sw * scale:(j + 1) * sw * scale] = out[..., _top, _left]
    return result[:, :, : H * scale - mph * scale, : W * scale - mpw * scale]


@pytest.mark.parametrize("shape", [(50, 70), (200, 130), (385, 400), (192, 64)])
def test_official_matches_reference_convnet(convnet, shape):
    img = natural_image(*shape, seed=6)
    ref = official_reference(torch.from_numpy(img)[None], convnet, 2)[0].numpy()
    out = Tiler(2, None, mode="official", batch=2).run(img, torch_fn(convnet))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_official_partition_geometry():
    # 385 -> 3 parts (pad 2 -> 387, split 129, shave 32); 64 -> 1 part
    assert Tiler.official_partition(385, 64) == (2, 0, 129, 64, 32, 16, 3, 1)
    # a part of exactly 64 pixels still grows to 128 (the official quirk)
    assert Tiler._mirror_extend(np.zeros((3, 64, 40), np.float32)).shape == (3, 128, 64)


def test_official_matches_reference_real_model(tiny_model):
    img = natural_image(196, 24, seed=7)
    ref = official_reference(torch.from_numpy(img)[None], tiny_model, 2)[0].numpy()
    out = Tiler(2, None, mode="official").run(img, torch_fn(tiny_model))
    np.testing.assert_allclose(out, ref, atol=1e-4)


# ------------------------------------------------------------------------------------ TTA
def test_tta_of_equivariant_model_is_identity():
    img = natural_image(24, 40)[None]
    np.testing.assert_allclose(tta_fn(nearest_fn(2))(img), nearest_fn(2)(img), atol=1e-6)


def test_tta_averages_eight_transforms(convnet):
    img = natural_image(24, 24)[None]
    fn = torch_fn(convnet)
    got = tta_fn(fn)(img)
    x = torch.from_numpy(img)
    outs = []
    for t in (False, True):
        for fh in (False, True):
            for fw in (False, True):
                y = x.flip(2) if fh else x
                y = y.flip(3) if fw else y
                y = y.transpose(2, 3) if t else y
                with torch.no_grad():
                    o = convnet(y)
                o = o.transpose(2, 3) if t else o
                o = o.flip(3) if fw else o
                o = o.flip(2) if fh else o
                outs.append(o)
    np.testing.assert_allclose(got, torch.stack(outs).mean(0).numpy(), atol=1e-5)
