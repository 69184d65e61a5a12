#!/usr/bin/env python3
"""Fetch the training photos and the held-out set of the default model (issue 13).

Sources, and nothing else: Debian's ``plasma-workspace-wallpapers``, ``mate-backgrounds`` and
``gnome-backgrounds`` packages (the pinned versions below, downloaded from the Debian pool,
checked against their SHA-256 and unpacked with ``dpkg-deb -x``) and the images bundled in the
scikit-image wheel (``pip download --no-deps``, ``skimage/data/*`` unzipped; nothing fetched by
pooch). ``IMAGES`` below lists every image used,
its package, its path inside the package, its split and its licence; everything else in those
packages (vector/abstract/flat-colour wallpapers, drawings, renders, SVGs, tiny images) is left
out. The held-out images are never trained on.

Output (written atomically; stale images in ``train/`` and ``heldout/`` are removed)::

    OUT/train/<name>.png|.webp   longer side shrunk to --max-side (Lanczos); grey sources as 1-channel
    OUT/heldout/<name>.png       shrunk to 1280, central 512x512, cropped to a multiple of 4: the
                                 same pixels as ``prepare_data.py --hr-only --max-side 1280
                                 --center-crop 512`` writes to HR/
    OUT/SOURCES.md               the table printed at the end (name, split, source, licence, bytes)
    WORK/                        downloaded .deb / wheel files and their unpacked trees
                                 (default OUT/_sources; not needed for training)

Upload ``OUT/train`` and ``OUT/heldout`` (``--limit-mib`` checks their total; PNG at 1280 px
is 32.3 MiB, lossless WebP ``--train-format webp`` 25.5 MiB). Use them as
``scripts/train.py --hr-dir OUT/train --val-dir OUT/heldout`` (train.py lists .webp too).

    python scripts/get_training_photos.py --out DATA     # 32 train + 12 held-out (the shipped model's)
    python scripts/get_training_photos.py --out DATA28 --stages-1-2   # 28 train (its stages 1 and 2) + 12
    python scripts/get_training_photos.py --out DATA_FULL --train-format source   # full resolution
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.atomic import atomic_write  # noqa: E402
from mambacsr.degrade import center_crop, mod_crop, shrink_to_max_side, to_rgb_uint8  # noqa: E402
from runtime.imageio import IMAGE_SUFFIXES  # noqa: E402  (one suffix set for the project)
from runtime.trt_common import file_sha256  # noqa: E402  (the project's file hash; TensorRT imported lazily)

#: Debian packages: source -> (package, version, path in the Debian pool, SHA-256 of the .deb).
#: Every version of the three packages in the pool was looked through (bullseye to sid); only
#: these hold photographs not already listed. gnome-backgrounds 43.1 (bookworm), 48 and 51 have
#: only renders and drawings; mate-backgrounds 1.24 and 1.28 repeat 1.26's photographs byte for
#: byte; plasma 5.20 repeats 5.27's, and plasma 6.x adds only renders.
DEBS = {
    "plasma-workspace-wallpapers": (
        "plasma-workspace-wallpapers", "4:5.27.5-2",
        "pool/main/p/plasma-workspace-wallpapers/plasma-workspace-wallpapers_5.27.5-2_all.deb",
        "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"),
    "mate-backgrounds": (
        "mate-backgrounds", "1.26.0-1",
        "pool/main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb",
        "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
    "gnome-backgrounds-3.38": (  # bullseye's: the last with photographs
        "gnome-backgrounds", "3.38.0-1",
        "pool/main/g/gnome-backgrounds/gnome-backgrounds_3.38.0-1_all.deb",
        "76d8a4c52e5f346d9cb08bc8a1f58ad443d2bae211721af8a7248457c7a520e8"),
}
MIRROR = "http://deb.debian.org/debian"
SKIMAGE = "scikit-image"
SKIMAGE_VERSION = "0.26.0"

_PW = "plasma-workspace-wallpapers"
_MB = "mate-backgrounds"
_GB = "gnome-backgrounds-3.38"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
_GNOME = "usr/share/backgrounds/gnome/{}.jpg"
_SK = "skimage/data/{}"
# Licences: Plasma, per-wallpaper metadata.json (KPlugin Authors/License; the package's copyright
# file says GPL-2+ for every file); MATE, /usr/share/doc/mate-backgrounds/copyright; scikit-image,
# the docstrings of skimage/data/_fetchers.py (the package itself is BSD-3-Clause).
_PL = "LGPL-3 (Plasma metadata.json; package GPL-2+)"
_ML = "GPL-2+ (mate-backgrounds copyright)"
# gnome-backgrounds 3.38: the upstream credits in usr/share/doc/gnome-backgrounds/AUTHORS (Debian's
# copyright file of that version still lists the images of 3.2x). Its Icetwigs.jpg is credited
# nowhere in the package, so it is left out.
_GL = "gnome-backgrounds 3.38 AUTHORS"

#: name -> (source: a DEBS key or SKIMAGE, path inside the package, split, licence / author)
IMAGES: dict[str, tuple[str, str, str, str]] = {
    # -- held-out: the 8 images of the current README (numbers stay comparable) ------------------
    "mate_LadyBird": (_MB, _MATE.format("LadyBird"), "heldout", f"{_ML}; Charles Barbin"),
    "mate_Storm": (_MB, _MATE.format("Storm"), "heldout", f"{_ML}; Sergey Nazarov"),
    "plasma_ColorfulCups": (_PW, _PLASMA.format("ColorfulCups"), "heldout", f"{_PL}; Dmitri Popov"),
    "plasma_Path": (_PW, _PLASMA.format("Path"), "heldout", f"{_PL}; Risto Saukonpää"),
    "sk_astronaut": (SKIMAGE, _SK.format("astronaut.png"), "heldout", "public domain (NASA)"),
    "sk_chelsea": (SKIMAGE, _SK.format("chelsea.png"), "heldout", "CC0 (Stefan van der Walt)"),
    "sk_coffee": (SKIMAGE, _SK.format("coffee.png"), "heldout", "CC0 (Rachel Michetti)"),
    "sk_rocket": (SKIMAGE, _SK.format("rocket.jpg"), "heldout", "public domain (SpaceX)"),
    # -- held-out additions. gnome-backgrounds 43.1 has no photograph (only 3-D renders and
    # drawings: adwaita, grid, licorice, pixels, symbolic, truchet, vnc, wood and SVGs), so these
    # are scikit-image photos that neither the old model nor this training set has seen.
    "sk_coins": (SKIMAGE, _SK.format("coins.png"), "heldout", "no known copyright restrictions (Brooklyn Museum)"),
    "sk_retina": (SKIMAGE, _SK.format("retina.jpg"), "heldout", "CC0 (Mikael Häggström, Wikimedia)"),
    "sk_text": (SKIMAGE, _SK.format("text.png"), "heldout", "public domain (Wikipedia File:Corner.png)"),
    "sk_page": (SKIMAGE, _SK.format("page.png"), "heldout", "no licence stated (scikit-image package: BSD-3-Clause)"),
    # -- train: Plasma photographs -------------------------------------------------------------
    "plasma_BytheWater": (_PW, _PLASMA.format("BytheWater"), "train", f"{_PL}; Maciej Wiklo"),
    "plasma_ColdRipple": (_PW, _PLASMA.format("ColdRipple"), "train", f"{_PL}; Risto Saukonpää"),
    "plasma_DarkestHour": (_PW, _PLASMA.format("DarkestHour"), "train", f"{_PL}; Risto Saukonpää"),
    "plasma_EveningGlow": (_PW, _PLASMA.format("EveningGlow"), "train", f"{_PL}; Ian Hex"),
    "plasma_FallenLeaf": (_PW, _PLASMA.format("FallenLeaf"), "train", f"{_PL}; Martin Klapetek"),
    "plasma_Grey": (_PW, _PLASMA.format("Grey"), "train", f"{_PL}; Sigi Sagi"),
    "plasma_Kite": (_PW, _PLASMA.format("Kite"), "train", f"{_PL}; Risto Saukonpää"),
    "plasma_OneStandsOut": (_PW, _PLASMA.format("OneStandsOut"), "train", f"{_PL}; Risto Saukonpää"),
    "plasma_summer_1am": (_PW, _PLASMA.format("summer_1am"), "train", f"{_PL}; Risto Saukonpää"),
    # -- train: MATE nature/ photographs --------------------------------------------------------
    "mate_Aqua": (_MB, _MATE.format("Aqua"), "train", f"{_ML}; Charles Barbin"),
    "mate_Blinds": (_MB, _MATE.format("Blinds"), "train", f"{_ML}; Lennart Poettering, Andrea Cimitan"),
    "mate_Dune": (_MB, _MATE.format("Dune"), "train", f"{_ML}; Marco Cogoni, Hylke Bons"),
    "mate_FreshFlower": (_MB, _MATE.format("FreshFlower"), "train", f"{_ML}; Jens Ansorg"),
    "mate_Garden": (_MB, _MATE.format("Garden"), "train", f"{_ML}; Charles Barbin"),
    "mate_GreenMeadow": (_MB, _MATE.format("GreenMeadow"), "train", f"{_ML}; Timothy Schellhase, Lapo Calamandrei"),
    "mate_RainDrops": (_MB, _MATE.format("RainDrops"), "train", f"{_ML}; \"blackcombwhistler07\""),
    "mate_TwoWings": (_MB, _MATE.format("TwoWings"), "train", f"{_ML}; Charles Barbin, Hylke Bons"),
    "mate_Wood": (_MB, _MATE.format("Wood"), "train", f"{_ML}; Jean-François Fortin Tam"),
    "mate_YellowFlower": (_MB, _MATE.format("YellowFlower"), "train", f"{_ML}; Charles Barbin"),
    # -- train: scikit-image photographs --------------------------------------------------------
    "sk_camera": (SKIMAGE, _SK.format("camera.png"), "train", "CC0 (Lav Varshney)"),
    "sk_brick": (SKIMAGE, _SK.format("brick.png"), "train", "CC0 (CC0Textures)"),
    "sk_grass": (SKIMAGE, _SK.format("grass.png"), "train", "CC0 (DeviantArt linolafett)"),
    "sk_gravel": (SKIMAGE, _SK.format("gravel.png"), "train", "CC0 (CC0Textures)"),
    "sk_hubble_deep_field": (SKIMAGE, _SK.format("hubble_deep_field.jpg"), "train", "public domain (NASA)"),
    "sk_ihc": (SKIMAGE, _SK.format("ihc.png"), "train", "no known copyright restrictions (CMMI)"),
    "sk_moon": (SKIMAGE, _SK.format("moon.png"), "train", "no licence stated (scikit-image package: BSD-3-Clause)"),
    "sk_motorcycle_left": (SKIMAGE, _SK.format("motorcycle_left.png"), "train", "Middlebury 2014 stereo (Scharstein et al.)"),
    "sk_motorcycle_right": (SKIMAGE, _SK.format("motorcycle_right.png"), "train", "Middlebury 2014 stereo (Scharstein et al.)"),
    # -- train: GNOME 3.38 photographs (the shipped model's stage 3 only: --stages-1-2 leaves them out)
    "gnome_ColdWarm": (_GB, _GNOME.format("ColdWarm"), "train", f"CC0 ({_GL}); \"invisiblepower\" (Pexels)"),
    "gnome_Dark_Ivy": (_GB, _GNOME.format("Dark_Ivy"), "train", f"CC-BY-SA-3.0 ({_GL}); Garrett LeSage"),
    "gnome_Road": (_GB, _GNOME.format("Road"), "train", f"CC0 ({_GL}); Joshua Welch (Pexels)"),
    "gnome_SeaSunset": (_GB, _GNOME.format("SeaSunset"), "train", f"CC0 ({_GL}); Sebastian Voortman (Pexels)"),
}
#: The training photos that only the shipped model's stage 3 used (its stages 1 and 2 had the other 28):
#: all of gnome-backgrounds 3.38's.
STAGE_3_ONLY = {name for name, (source, *_) in IMAGES.items() if source == _GB}

COPYRIGHT = "usr/share/doc/{}/copyright"
HELDOUT_MAX_SIDE, HELDOUT_CROP, SCALE = 1280, 512, 4


def run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch_debs(work: Path, sources: set[str], mirror: str) -> dict[str, Path]:
    """Download (once) each source's .deb, check its SHA-256, dpkg-deb -x it; returns source -> root."""
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("error: dpkg-deb not found: install dpkg (Debian/Ubuntu have it) to unpack the .deb files")
    debs, roots = work / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    for source in sorted(sources):
        pkg, _, pool_path, want = DEBS[source]
        deb = debs / Path(pool_path).name
        if not (deb.is_file() and file_sha256(deb) == want):
            url = f"{mirror.rstrip('/')}/{pool_path}"
            print(f"+ download {url}", flush=True)
            with atomic_write(deb) as tmp:
                try:
                    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                        shutil.copyfileobj(r, f, 1 << 20)
                except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
                    raise SystemExit(f"error: cannot download {url}: {e}; check the network or give --mirror") from e
                got = file_sha256(tmp)
                if got != want:
                    raise SystemExit(f"error: {url} has SHA-256 {got}, not the pinned {want}: "
                                     "the mirror serves another file; try --mirror")
        root = work / "pkgs" / source
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(root)])
        if not (root / COPYRIGHT.format(pkg)).is_file():
            raise SystemExit(f"error: {deb.name} has no {COPYRIGHT.format(pkg)}")
        roots[source] = root
    return roots


def fetch_skimage(work: Path) -> Path:
    """pip download the scikit-image wheel and unzip skimage/data/*; returns the root."""
    wheels = work / "wheel"
    found = sorted(wheels.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not found:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             f"{SKIMAGE}=={SKIMAGE_VERSION}", "-d", str(wheels)])
        found = sorted(wheels.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not found:
        raise SystemExit(f"error: pip left no scikit_image-{SKIMAGE_VERSION} wheel in {wheels}")
    root = work / "pkgs" / SKIMAGE
    if root.exists():
        shutil.rmtree(root)
    with zipfile.ZipFile(found[-1]) as z:
        for n in z.namelist():
            if n.startswith("skimage/data/") and not n.endswith("/"):
                z.extract(n, root)
    return root


def save_image(arr: np.ndarray, path: Path, fmt: str) -> None:
    """Atomic lossless save; a grey image (R == G == B) as one channel (to_rgb_uint8 expands it)."""
    grey = bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all())
    im = Image.fromarray(np.ascontiguousarray(arr[..., 0] if grey else arr))
    with atomic_write(path) as tmp:
        if fmt == "webp":
            im.save(tmp, format="WEBP", lossless=True, quality=100, method=6, exact=True)
        else:
            im.save(tmp, format="PNG", optimize=True)
        with Image.open(tmp) as back:  # lossless, checked
            if not np.array_equal(to_rgb_uint8(back), arr):
                raise SystemExit(f"error: {fmt} round trip of {path.name} is not lossless")


def check_list() -> None:
    paths = [(pkg, p) for pkg, p, _, _ in IMAGES.values()]
    if len(set(paths)) != len(paths):
        raise SystemExit("error: one source image is listed twice (train and held-out must be disjoint)")
    for name, (pkg, _, split, _) in IMAGES.items():
        if split not in ("train", "heldout") or pkg not in (*DEBS, SKIMAGE):
            raise SystemExit(f"error: bad entry {name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder (train/, heldout/, SOURCES.md)")
    ap.add_argument("--work", type=Path, help="download/unpack folder (default OUT/_sources)")
    ap.add_argument("--max-side", type=int, default=1280, help="longer side of the train images (Lanczos)")
    ap.add_argument("--train-format", choices=("png", "webp", "source"), default="png",
                    help="train images as PNG or lossless WebP shrunk to --max-side, or 'source': the "
                         "package's own file, byte for byte, at full resolution (held-out: always PNG)")
    ap.add_argument("--limit-mib", type=float, default=45.0, help="fail if train/ + heldout/ exceed this")
    ap.add_argument("--stages-1-2", action="store_true",
                    help="only the 28 training photos of the shipped model's stages 1 and 2 (leaves out STAGE_3_ONLY)")
    ap.add_argument("--mirror", default=MIRROR, help=f"Debian mirror to download the pinned .deb files from (default {MIRROR})")
    args = ap.parse_args(argv)
    check_list()
    out = args.out
    work = args.work or out / "_sources"

    images = {n: v for n, v in IMAGES.items() if not (args.stages_1_2 and n in STAGE_3_ONLY)}
    roots = fetch_debs(work, {v[0] for v in images.values() if v[0] in DEBS}, args.mirror)
    roots[SKIMAGE] = fetch_skimage(work)

    rows, written = [], {"train": set(), "heldout": set()}
    for name, (pkg, rel, split, licence) in images.items():
        src = roots[pkg] / rel
        if not src.is_file():
            raise SystemExit(f"error: {pkg} has no {rel}")
        with Image.open(src) as im:
            src_size = im.size
            img = to_rgb_uint8(im)
        if split == "heldout":  # prepare_data.py --hr-only --max-side 1280 --center-crop 512
            img = mod_crop(center_crop(shrink_to_max_side(img, HELDOUT_MAX_SIDE), HELDOUT_CROP), SCALE)
            fmt = "png"
        elif args.train_format == "source":  # full resolution, no re-encoding (train.py --max-side shrinks)
            fmt = src.suffix.lower().lstrip(".")
        else:
            img = shrink_to_max_side(img, args.max_side)
            fmt = args.train_format
        dst = out / split / f"{name}.{fmt}"
        if split == "train" and args.train_format == "source":
            with atomic_write(dst) as tmp:
                shutil.copyfile(src, tmp)
        else:
            save_image(img, dst, fmt)
        written[split].add(dst.name)
        rows.append((dst.name, split, pkg, rel, licence, src_size, img.shape, dst.stat().st_size))

    for split, names in written.items():  # images of an earlier list / format would be trained on
        for p in sorted((out / split).iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name not in names:
                print(f"removing stale {p}")
                p.unlink()

    versions = {**{s: f"{pkg} {ver}" for s, (pkg, ver, _, _) in DEBS.items()}, SKIMAGE: f"{SKIMAGE} {SKIMAGE_VERSION}"}
    lines = ["| file | split | source (version) : path | source size | stored size | bytes | licence |",
             "|---|---|---|---|---|---:|---|"]
    for fname, split, pkg, rel, licence, (sw, sh), shape, nbytes in rows:
        lines.append(f"| {split}/{fname} | {split} | {versions[pkg]} : {rel} | {sw}x{sh} | "
                     f"{shape[1]}x{shape[0]} | {nbytes} | {licence} |")
    totals = {s: sum(r[-1] for r in rows if r[1] == s) for s in ("train", "heldout")}
    counts = {s: sum(1 for r in rows if r[1] == s) for s in ("train", "heldout")}
    total = sum(totals.values())
    stored = ("package files, full resolution" if args.train_format == "source"
              else f"{args.train_format}, longer side <= {args.max_side}")
    summary = [f"train: {counts['train']} images, {totals['train']} bytes ({stored})",
               f"heldout: {counts['heldout']} images, {totals['heldout']} bytes (png, central 512x512)",
               f"total: {total} bytes = {total / 2**20:.2f} MiB (limit {args.limit_mib} MiB)"]
    per_source = {}
    for r in rows:
        per_source.setdefault(r[2], {"train": 0, "heldout": 0})[r[1]] += 1
    summary += [f"{versions[pkg]}: {c['train']} train, {c['heldout']} held-out"
                for pkg, c in per_source.items()]
    cmd = "python scripts/get_training_photos.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(["# Training / held-out photos", "", f"Made by `{cmd}`.", "", *lines, "",
                      *[f"* {s}" for s in summary], ""])
    with atomic_write(out / "SOURCES.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text)
    if total > args.limit_mib * 2**20:
        print(f"error: train/ + heldout/ = {total / 2**20:.2f} MiB > {args.limit_mib} MiB: use "
              f"--train-format webp or a smaller --max-side", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
