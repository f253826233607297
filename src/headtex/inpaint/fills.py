"""Classical fills of a texture's missing region, the one implementation every user shares (numpy + cv2).

`evaluate` scores them as baselines; the `symres` generator starts from `fill_symmetric` and learns a residual
over it, so train, evaluate, complete and reconstruct all fill with exactly this code.
"""
from __future__ import annotations

import cv2
import numpy as np

OPENCV_RADIUS = 5  # texels cv2.inpaint looks around each missing texel


def fill_opencv(texture: np.ndarray, region: np.ndarray, method: str, radius: int = OPENCV_RADIUS) -> np.ndarray:
    """OpenCV inpainting (`telea` or `navier_stokes`) of the region only."""
    flag = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}[method]
    out = texture.copy()
    if not region.any():
        return out
    filled = cv2.inpaint(np.ascontiguousarray(texture), region.astype(np.uint8) * 255, radius, flag)
    out[region] = filled[region]
    return out


def fill_mirror(texture: np.ndarray, region: np.ndarray, rest: str = "telea",
                valid: np.ndarray | None = None) -> np.ndarray:
    """Fill a missing texel from its left/right mirror texel when that one is known (and on the head when
    `valid` is given), the rest with OpenCV's `rest` method.

    The UV layout puts the face's symmetry plane at u = 0.5, so column c mirrors column U-1-c.
    """
    source_known = ~region[:, ::-1]
    if valid is not None:
        source_known &= valid[:, ::-1]
    from_mirror = region & source_known
    out = texture.copy()
    out[from_mirror] = texture[:, ::-1][from_mirror]
    return fill_opencv(out, region & ~from_mirror, rest)


def fill_symmetric(texture: np.ndarray, region: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The `symres` prior: the mirror texel where it is known, Navier-Stokes elsewhere (the best of the
    classical fills on free-form strokes, and the mirror on the large real masks: docs/RESULTS.md)."""
    return fill_mirror(texture, region, "navier_stokes", valid)


def fill_mean(texture: np.ndarray, region: np.ndarray, mean_texture: np.ndarray) -> np.ndarray:
    """Fill the region with the mean training texture."""
    out = texture.copy()
    out[region] = mean_texture[region]
    return out


def masked_input(texture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """What a method sees: the texture with the region blanked (white, as in the thesis' figures)."""
    out = texture.copy()
    out[region] = 255
    return out
