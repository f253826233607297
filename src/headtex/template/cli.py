"""`headtex template`: fetch the menpo3d scan and build models/template/."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.assets import find_params
from headtex.geometry import Light
from headtex.geometry.template import lit_texture, render_view, save_template
from headtex.geometry.uv import UVParams
from headtex.io import atomic_dir, write_json, write_png
from headtex.params import load_params, param, section
from headtex.template.core import build_template
from headtex.template.files import download_sdist, read_sdist

PREVIEW_YAWS = (-35.0, 0.0, 35.0)


@dataclass
class TemplateParams:
    """The `template:` section of params.yaml."""

    source: str | None = param("path to menpo3d-0.8.6.tar.gz for offline machines; null = fetch with pip")
    render_uv_size: int = param("albedo resolution used for rendering synthetic views", ge=64)


def run(params_path: Path | None, source: Path | None, out: Path, metrics_path: Path,
        timing_path: Path | None = None) -> dict:
    """params_path None: ./params.yaml, else the one shipped with the package (building the cache folder's
    template outside a checkout: headtex.assets)."""
    params = load_params(find_params(params_path))
    config = section(params, "template", TemplateParams)
    uv = section(params, "uv", UVParams)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        sdist = source or (Path(config.source) if config.source else download_sdist(Path(scratch)))
        scan, landmarks, atlas = read_sdist(sdist)
    template = build_template(scan, landmarks, atlas, uv.layout(), uv.size, config.render_uv_size)

    lit = lit_texture(template.albedo_render, template.vertices, template.faces,
                      template.render_texel_triangle, template.render_texel_barycentrics, Light())
    views = [render_view(template, template.vertices, lit, yaw, 256)[0] for yaw in PREVIEW_YAWS]
    render_seconds = []
    for _ in range(5):
        tick = time.perf_counter()
        render_view(template, template.vertices, lit, 0.0, 256)
        render_seconds.append(time.perf_counter() - tick)
    with atomic_dir(out) as staging:
        save_template(staging, template)
        albedo = cv2.resize(template.albedo, (256, 256), interpolation=cv2.INTER_AREA)
        write_png(staging / "preview.png", np.hstack([albedo, *views]))

    metrics = {
        "vertices": int(len(template.vertices)),
        "triangles": int(len(template.faces)),
        "landmarks": int(len(template.landmark_ids)),
        "shape_modes": len(template.basis_names),
        "uv_size": uv.size,
        "uv_coverage": round(float(template.texel_valid.mean()), 4),
    }
    write_json(metrics_path, metrics)
    timing = {"render_256_seconds_median": round(float(np.median(render_seconds)), 4),
              "build_seconds": round(time.perf_counter() - started, 2)}
    if timing_path is not None:
        write_json(timing_path, timing)
    metrics = {**metrics, **timing}
    return metrics
