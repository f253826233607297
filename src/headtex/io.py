"""Atomic writes, shards and small JSON helpers shared by the stages."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
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
    """Save uncompressed arrays atomically (shards are read often, so no compression)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz without ever unpickling."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


SHARD_PATTERN = "shard-{:05d}.npz"


def write_index(folder: Path, shards: list[dict], **info: object) -> None:
    """index.json of a sharded dataset: the shard files with what each holds, plus dataset-wide facts."""
    write_json(Path(folder) / "index.json", {"shards": shards, **info})


def read_index(folder: Path) -> dict:
    path = Path(folder) / "index.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; run the stage that writes {folder} first")
    return json.loads(path.read_text())


def iter_shards(folder: Path) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """(index entry, arrays) for every shard of a dataset, in index order."""
    for entry in read_index(folder)["shards"]:
        yield entry, load_npz(Path(folder) / entry["file"])
