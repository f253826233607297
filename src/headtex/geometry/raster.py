"""Vectorised z-buffer rasterisation of triangle meshes.

Screen convention: x to the right, y down, pixel (row i, col j) has its centre
at (x=j, y=i); depth z grows towards the viewer, so the largest z wins.
"""
from __future__ import annotations

import numpy as np


def rasterize(screen: np.ndarray, faces: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise triangles given per-vertex screen (x, y, depth).

    Returns (triangle_id, barycentrics): an (H, W) int32 map with -1 where no
    triangle covers the pixel, and an (H, W, 3) float32 map of barycentric
    weights of the nearest triangle's corners.
    """
    corners = screen[faces].astype(np.float64)  # F,3,3
    x, y, z = corners[..., 0], corners[..., 1], corners[..., 2]
    x0 = np.clip(np.ceil(x.min(1)), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(x.max(1)), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(1)), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(y.max(1)), -1, height - 1).astype(np.int64)
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    box_w = np.maximum(x1 - x0 + 1, 0)
    box_h = np.maximum(y1 - y0 + 1, 0)
    counts = np.where(np.abs(area2) > 1e-12, box_w * box_h, 0)

    # One candidate per (triangle, pixel in its bounding box): no Python loop.
    tri = np.repeat(np.arange(len(faces)), counts)
    starts = np.cumsum(counts) - counts
    local = np.arange(counts.sum()) - np.repeat(starts, counts)
    px = x0[tri] + local % box_w[tri]
    py = y0[tri] + local // box_w[tri]

    # Edge functions give barycentrics; a point is inside when all are >= 0.
    xt, yt = x[tri], y[tri]
    inv_area = 1.0 / area2[tri]
    w0 = ((xt[:, 1] - px) * (yt[:, 2] - py) - (xt[:, 2] - px) * (yt[:, 1] - py)) * inv_area
    w1 = ((xt[:, 2] - px) * (yt[:, 0] - py) - (xt[:, 0] - px) * (yt[:, 2] - py)) * inv_area
    w2 = 1.0 - w0 - w1
    eps = -1e-7
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    tri, px, py = tri[inside], px[inside], py[inside]
    bary = np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
    depth = (bary * z[tri]).sum(1)

    # Z-buffer: per pixel keep the candidate with the largest depth
    # (ties broken by the lower triangle id, so the result is deterministic).
    pixel = py * width + px
    order = np.lexsort((tri, -depth, pixel))
    pixel_sorted = pixel[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    winner = order[first]

    triangle_id = np.full(height * width, -1, dtype=np.int32)
    barycentrics = np.zeros((height * width, 3), dtype=np.float32)
    triangle_id[pixel[winner]] = tri[winner]
    barycentrics[pixel[winner]] = bary[winner]
    return triangle_id.reshape(height, width), barycentrics.reshape(height, width, 3)


def interpolate(values: np.ndarray, faces: np.ndarray, triangle_id: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    """Interpolate per-vertex values (V, C) at every covered pixel; zeros elsewhere."""
    covered = triangle_id >= 0
    out = np.zeros(triangle_id.shape + (values.shape[1],), dtype=np.float32)
    corner_values = values[faces[triangle_id[covered]]]  # P,3,C
    out[covered] = np.einsum("pk,pkc->pc", barycentrics[covered], corner_values)
    return out
