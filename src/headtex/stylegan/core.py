"""Stylegan core: the yaw direction in MobileStyleGAN's style space (arrays only, no I/O).

The thesis traversed EigenGAN's pose dimension; this generator has none, so the pipeline finds one, as
InterFaceGAN does for its edits: generate people, measure each one's yaw with our own landmark fit, and regress
yaw on the style by ridge regression. The synthesis network takes one style for every layer (1 x 512), so the
direction is one vector, not one per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headtex.generator import PoseDirection
from headtex.params import param

CV_FOLDS = 4  # cross-validated R^2 of the regression (seeded folds)


@dataclass
class StyleganParams:
    """The `stylegan:` section of params.yaml."""

    source: str | None = param("path to random_face-2021.7.21.1-py3-none-any.whl for offline machines; "
                               "null = fetch with pip")
    mean_samples: int = param("latents averaged for the mean style (the truncation centre)", ge=1)
    pose_samples: int = param("generated people the yaw direction is regressed on", ge=8)
    pose_truncation: float = param("truncation of those people (1 = none)", gt=0, le=1)
    pose_ridge: float = param("ridge regularisation of the regression, times the mean squared style norm", gt=0)
    seed: int = param("latents of the mean style and of the pose samples")


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """beta, intercept of y ~ x (N,D) with an L2 penalty ridge * mean |x|^2; solved in the N x N dual (N < D)."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    penalty = ridge * float(np.mean(np.sum(xc**2, axis=1)))
    alpha = np.linalg.solve(xc @ xc.T + penalty * np.eye(len(x)), yc)
    beta = xc.T @ alpha
    return beta, float(y_mean - x_mean @ beta)


def fit_pose_direction(styles: np.ndarray, mean: np.ndarray, yaws: np.ndarray, ridge: float, seed: int
                       ) -> PoseDirection:
    """The yaw direction from people's styles (N,512) and their fitted yaws (N, degrees)."""
    x = np.asarray(styles, np.float64) - np.asarray(mean, np.float64)
    y = np.asarray(yaws, np.float64)
    beta, intercept = _ridge(x, y, ridge)
    folds = np.random.default_rng(seed).permutation(len(x)) % CV_FOLDS
    predicted = np.empty_like(y)
    for fold in range(CV_FOLDS):
        held = folds == fold
        b, c = _ridge(x[~held], y[~held], ridge)
        predicted[held] = x[held] @ b + c
    total = float(np.sum((y - y.mean()) ** 2))
    norm = float(np.linalg.norm(beta))
    direction = beta / norm
    return PoseDirection(direction=direction.astype(np.float32), degrees_per_unit=norm, intercept=intercept,
                         sigma=float(np.std(x @ direction)),
                         r2=1.0 - float(np.sum((x @ beta + intercept - y) ** 2)) / total,
                         r2_cv=1.0 - float(np.sum((predicted - y) ** 2)) / total)
