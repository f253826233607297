"""Textured, Lambertian-lit rendering with per-pixel texture lookup."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headtex.geometry.raster import interpolate_at, put_rows, rasterize_covered


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
    # Sums per vertex, corner 0 of every face first, then corners 1 and 2 (np.add.at's order, so the same
    # floating-point sums); bincount does it several times faster than np.add.at on rows.
    corner_vertex = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    normals = np.stack([np.bincount(corner_vertex, weights=np.tile(face_normals[:, c].astype(np.float64), 3),
                                    minlength=len(vertices)) for c in range(3)], axis=1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def lambert_shading(normals: np.ndarray, light: Light) -> np.ndarray:
    """Per-normal RGB shading factor: ambient + diffuse * max(0, n . l)."""
    direction = np.asarray(light.direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    cosine = np.clip(normals @ direction, 0.0, None)
    # Computed as (3, N) so that numpy's inner loops run along the long axis.
    return (np.asarray(light.ambient)[:, None] + np.asarray(light.diffuse)[:, None] * cosine[None]).T


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
    cull_back_faces: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a textured mesh already projected to screen coordinates of an image_size image.

    Renders at `supersample` times the size and area-averages down (anti-aliasing).
    Returns the uint8 RGB image and the coverage mask (float in [0, 1]).
    `cull_back_faces` is passed to rasterize (faster; only for meshes whose back faces never show).
    """
    big = image_size * supersample
    scaled = screen.copy()
    # Pixel centres sit at integer coordinates at both resolutions.
    scaled[:, :2] = (screen[:, :2] + 0.5) * supersample - 0.5
    covered, triangle, barycentrics = rasterize_covered(scaled, faces, big, big, cull_back_faces)
    # Texture lookups only where the mesh is, composited straight into the backdrop (uint8 throughout:
    # the area average of uint8 pixels rounds exactly like the float average + 0.5).
    uv = interpolate_at(vertex_uv, faces, triangle, barycentrics)
    colour = _to_uint8(sample_texture(texture, uv))
    if isinstance(background, np.ndarray) and background.ndim == 3:
        image = _to_uint8(cv2.resize(background, (big, big), interpolation=cv2.INTER_LINEAR))
    else:
        image = np.empty((big, big, 3), dtype=np.uint8)
        image[:] = _to_uint8(np.asarray(background, dtype=np.float32))
    put_rows(image.reshape(-1, 3), covered, colour)
    coverage = np.zeros(big * big, dtype=np.float32)
    coverage[covered] = 1.0
    coverage = coverage.reshape(big, big)
    if supersample > 1:
        image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
        coverage = cv2.resize(coverage, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return image, coverage


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
