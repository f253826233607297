"""Reading the menpo3d source distribution and reading/writing models/template/."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError, load_npz, read_png, save_npz, write_json, write_png
from headtex.template.core import Scan, Template, UVLayout, parse_ljson_landmarks, parse_obj

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


def save_template(folder: Path, template: Template) -> None:
    """Write the arrays (npz), a JSON description, the albedo PNGs and a viewable OBJ."""
    folder = Path(folder)
    save_npz(
        folder / "template.npz",
        vertices=template.vertices, faces=template.faces, vertex_uv=template.vertex_uv,
        landmark_ids=template.landmark_ids, basis=template.basis,
        texel_triangle=template.texel_triangle, texel_barycentrics=template.texel_barycentrics,
        render_texel_triangle=template.render_texel_triangle,
        render_texel_barycentrics=template.render_texel_barycentrics,
    )
    write_json(folder / "template.json", {
        "basis_names": template.basis_names,
        "layout": dataclasses.asdict(template.layout),
        "uv_size": int(template.albedo.shape[0]),
        "render_uv_size": int(template.albedo_render.shape[0]),
        "units": "millimetres; head frame x = subject's left, y = up, z = out of the face",
        "source": "menpo3d 0.8.6 james scan (BSD-3)",
    })
    write_png(folder / "albedo.png", template.albedo)
    write_png(folder / "albedo_render.png", template.albedo_render)
    write_png(folder / "valid.png", template.texel_valid.astype(np.uint8) * 255)
    write_obj(folder / "head.obj", template.vertices, template.faces, template.vertex_uv, "albedo_render.png")


def load_template(folder: Path) -> Template:
    folder = Path(folder)
    if not (folder / "template.npz").is_file():
        raise UserError(f"{folder}: no template found; run `headtex template` (or `dvc repro template`) first")
    arrays = load_npz(folder / "template.npz")
    meta = json.loads((folder / "template.json").read_text())
    return Template(
        **arrays,
        basis_names=meta["basis_names"],
        albedo=read_png(folder / "albedo.png"),
        albedo_render=read_png(folder / "albedo_render.png"),
        layout=UVLayout(**meta["layout"]),
    )


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, vertex_uv: np.ndarray, texture_name: str) -> None:
    """A Wavefront OBJ + MTL with one texture coordinate per vertex, referencing the texture by relative path."""
    path = Path(path)
    material = path.with_suffix(".mtl")
    material.write_text(f"newmtl head\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {texture_name}\n")
    out = io.StringIO()
    out.write(f"mtllib {material.name}\nusemtl head\n")
    np.savetxt(out, vertices, fmt="v %.4f %.4f %.4f")
    np.savetxt(out, np.column_stack([vertex_uv[:, 0], 1.0 - vertex_uv[:, 1]]), fmt="vt %.6f %.6f")
    corners = faces + 1
    np.savetxt(out, np.repeat(corners, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    path.write_text(out.getvalue())
