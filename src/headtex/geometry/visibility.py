"""Per-texel visibility of a posed mesh: depth test plus grazing-angle threshold."""
from __future__ import annotations

import numpy as np

from headtex.geometry.raster import interpolate, rasterize


def surface_points(vertices: np.ndarray, faces: np.ndarray, triangle: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    """Points (N, 3) on the mesh given triangle ids (N,) and barycentrics (N, 3)."""
    return np.einsum("nk,nkc->nc", barycentrics, vertices[faces[triangle]])


def depth_map(screen: np.ndarray, faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-surface depth per pixel (-inf where empty)."""
    triangle_id, barycentrics = rasterize(screen, faces, height, width)
    depth = interpolate(screen[:, 2:3], faces, triangle_id, barycentrics)[..., 0]
    depth[triangle_id < 0] = -np.inf
    return depth


def visible_points(
    points_screen: np.ndarray,
    normals: np.ndarray,
    view_direction: np.ndarray,
    depth: np.ndarray,
    depth_tolerance: float,
    max_view_angle_degrees: float,
) -> np.ndarray:
    """Which projected surface points are seen by the camera.

    A point is visible when it faces the camera within `max_view_angle_degrees`
    (grazing texels sample smeared pixels) and no surface lies more than
    `depth_tolerance` (screen depth units) in front of it at its pixel.
    """
    height, width = depth.shape
    facing = normals @ view_direction > np.cos(np.radians(max_view_angle_degrees))
    col = np.rint(points_screen[:, 0]).astype(np.int64)
    row = np.rint(points_screen[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    nearest = np.full(len(points_screen), np.inf)
    nearest[inside] = depth[row[inside], col[inside]]
    return facing & inside & (points_screen[:, 2] >= nearest - depth_tolerance)
