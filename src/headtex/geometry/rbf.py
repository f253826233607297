"""Compactly supported radial basis functions: smooth displacement fields anchored on a few points of a mesh."""
from __future__ import annotations

import numpy as np


def wendland(r: np.ndarray) -> np.ndarray:
    """Wendland's C2 function (1 - r)^4 (4 r + 1) for r < 1, else 0: a smooth bump with compact support,
    positive definite in 3D, so the interpolation is well posed and nothing beyond its radius moves."""
    r = np.clip(r, 0.0, 1.0)
    return (1.0 - r) ** 4 * (4.0 * r + 1.0)


def wendland_field(vertices: np.ndarray, centres: np.ndarray, values: np.ndarray, radius: float,
                   ridge: float = 1e-9) -> np.ndarray:
    """The Wendland-RBF interpolant (V, D float64) through values (C, D) at centres (C, 3), evaluated at the
    vertices (V, 3); vertices further than radius from every centre get exactly 0. ridge: on the kernel
    matrix, conditioning only (distinct centres make it positive definite)."""
    centres = np.asarray(centres, np.float64)
    vertices = np.asarray(vertices, np.float64)
    gram = wendland(np.linalg.norm(centres[:, None] - centres[None], axis=2) / radius)
    coefficients = np.linalg.solve(gram + ridge * np.eye(len(centres)), np.asarray(values, np.float64))
    near = np.flatnonzero(np.min(np.sum((vertices[:, None] - centres[None]) ** 2, axis=2), axis=1) < radius ** 2)
    field = np.zeros((len(vertices), coefficients.shape[1]))
    field[near] = wendland(np.linalg.norm(vertices[near, None] - centres[None], axis=2) / radius) @ coefficients
    return field
