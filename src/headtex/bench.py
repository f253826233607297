"""Benchmarks printed as one line each, for docs/RESULTS.md."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from headtex.geometry import Light, project, rasterize, rotation_matrix
from headtex.geometry.template import default_camera, lit_texture, load_template, render_view


def render_benchmark(template_dir: Path, image_size: int, repeats: int) -> str:
    template = load_template(template_dir)
    lit = lit_texture(template.albedo_render, template.vertices, template.faces,
                      template.render_texel_triangle, template.render_texel_barycentrics, Light())
    scale, translation = default_camera(image_size)
    screen = project(template.vertices, rotation_matrix(20.0), scale, translation)
    render, raster = [], []
    for _ in range(repeats):
        tick = time.perf_counter()
        render_view(template, template.vertices, lit, 20.0, image_size)
        render.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        rasterize(screen, template.faces, image_size, image_size)
        raster.append(time.perf_counter() - tick)
    return (f"render {image_size}x{image_size} (2x supersampled, {len(template.faces)} triangles): "
            f"median {1000 * np.median(render):.1f} ms; rasterize alone at {image_size}: "
            f"median {1000 * np.median(raster):.1f} ms; {repeats} repeats on {platform.processor() or platform.machine()}")
