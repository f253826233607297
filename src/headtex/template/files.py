"""Reading the menpo3d source distribution (the scan the template is built from)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError
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
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
        "--retries", "1", "--timeout", "20", "--disable-pip-version-check", "--quiet", SDIST, "-d", str(folder),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(Path(folder).glob("menpo3d-0.8.6.tar.gz"))
    if result.returncode != 0 or not found:
        raise UserError(f"could not download {SDIST} with pip (no network?): {HOW_TO_SUPPLY}")
    return found[0]


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


