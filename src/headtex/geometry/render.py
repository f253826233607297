"""Textured, Lambertian-lit rendering with per-pixel texture lookup."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headtex.geometry.raster import interpolate, rasterize


@dataclass(frozen=True)
class Light:
    """Ambient + one directional light, RGB intensities, direction towards the light in the head frame."""

    ambient: tuple[float, float, float] = (0.45, 0.45, 0.45)
    diffuse: tuple[float, float, float] = (0.65, 0.65, 0.65)
    direction: tuple[float, float, float] = (0.3, 0.4, 1.0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (faces wound anticlockwise seen from outside)."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def lambert_shading(normals: np.ndarray, light: Light) -> np.ndarray:
    """Per-normal RGB shading factor: ambient + diffuse * max(0, n . l)."""
    direction = np.asarray(light.direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    cosine = np.clip(normals @ direction, 0.0, None)[:, None]
    return np.asarray(light.ambient)[None] + np.asarray(light.diffuse)[None] * cosine


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of texture (T, T, C) at uv (..., 2) in [0, 1], v pointing down the image."""
    size_v, size_u = texture.shape[:2]
    points = uv.reshape(-1, 2)
    # cv2.remap wants maps under 32767 on a side, so lay the points out in rows.
    width = max(1, min(len(points), 4096))
    rows = -(-len(points) // width)
    grid = np.zeros((rows * width, 2), dtype=np.float32)
    grid[: len(points)] = points
    grid = grid.reshape(rows, width, 2)
    map_x = grid[..., 0] * size_u - 0.5
    map_y = grid[..., 1] * size_v - 0.5
    sampled = cv2.remap(texture, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape((rows * width,) + texture.shape[2:])[: len(points)].reshape(uv.shape[:-1] + texture.shape[2:])


def render_textured(
    screen: np.ndarray,
    faces: np.ndarray,
    vertex_uv: np.ndarray,
    texture: np.ndarray,
    image_size: int,
    background: np.ndarray | tuple[int, int, int] = (128, 128, 128),
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a textured mesh already projected to screen coordinates of an image_size image.

    Renders at `supersample` times the size and area-averages down (anti-aliasing).
    Returns the uint8 RGB image and the coverage mask (float in [0, 1]).
    """
    big = image_size * supersample
    scaled = screen.copy()
    # Pixel centres sit at integer coordinates at both resolutions.
    scaled[:, :2] = (screen[:, :2] + 0.5) * supersample - 0.5
    triangle_id, barycentrics = rasterize(scaled, faces, big, big)
    uv = interpolate(vertex_uv, faces, triangle_id, barycentrics)
    colour = sample_texture(texture, uv).astype(np.float32)
    covered = (triangle_id >= 0).astype(np.float32)
    if isinstance(background, np.ndarray) and background.ndim == 3:
        backdrop = cv2.resize(background, (big, big), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    else:
        backdrop = np.broadcast_to(np.asarray(background, dtype=np.float32), (big, big, 3))
    image = colour * covered[..., None] + backdrop * (1.0 - covered[..., None])
    if supersample > 1:
        image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
        covered = cv2.resize(covered, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), covered
