"""Classical fills of a texture's missing region, the one implementation every user shares (numpy + cv2).

`evaluate` scores them as baselines; the `symres` generator starts from `fill_poisson_mirror` and learns a residual
over it (`symres2` blends it with `fill_opencv`'s Navier-Stokes fill), so train, evaluate, complete and reconstruct
all fill with exactly this code.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

OPENCV_RADIUS = 5  # texels cv2.inpaint looks around each missing texel
POISSON_PULL = 1e-6  # weight of the pull towards the mean known colour (only decides otherwise free holes)


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


def fill_poisson_mirror(texture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The `symres` prior: a Poisson fill of the region guided by the mirrored texture's gradients where the
    mirror texels are known (their detail, re-lit to match the hole's border: the head's light is not
    symmetric), a membrane (harmonic) fill where they are not; every known texel is border.

    Solves, per channel, 4 f_p - sum f_q(missing) = sum f_q(known) + sum (g_p - g_q) over the 4-neighbours q
    of every missing texel p (neighbours off the image are left out), plus a 1e-6 pull towards the mean known
    colour so that a hole touching no known texel still has one solution.
    """
    out = texture.copy()
    if not region.any():
        return out
    h, w = region.shape
    guide_known = ~region[:, ::-1]
    guide = texture[:, ::-1].astype(np.float64)
    value = texture.astype(np.float64)
    index = -np.ones((h, w), np.int64)
    ys, xs = np.nonzero(region)
    n = len(ys)
    index[ys, xs] = np.arange(n)
    fallback = value[~region].mean(axis=0) if (~region).any() else np.full(texture.shape[2], 127.5)
    diagonal = np.full(n, POISSON_PULL)
    rhs = np.tile(POISSON_PULL * fallback, (n, 1))
    rows, cols = [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        p = np.flatnonzero((qy >= 0) & (qy < h) & (qx >= 0) & (qx < w))
        qy, qx = qy[p], qx[p]
        diagonal[p] += 1
        missing = region[qy, qx]
        rows.append(p[missing])
        cols.append(index[qy[missing], qx[missing]])
        np.add.at(rhs, p[~missing], value[qy[~missing], qx[~missing]])
        guided = guide_known[ys[p], xs[p]] & guide_known[qy, qx]
        np.add.at(rhs, p[guided], guide[ys[p[guided]], xs[p[guided]]] - guide[qy[guided], qx[guided]])
    off = np.concatenate(rows)
    matrix = coo_matrix((np.concatenate([diagonal, -np.ones(len(off))]),
                         (np.concatenate([np.arange(n), off]), np.concatenate([np.arange(n), *cols]))),
                        shape=(n, n)).tocsc()
    # minimum-degree ordering on A + A^T (A is symmetric): the same solution as the default COLAMD's, ~20 % sooner
    solution = spsolve(matrix, rhs, permc_spec="MMD_AT_PLUS_A").reshape(n, -1)
    out[ys, xs] = np.clip(np.rint(solution), 0, 255).astype(texture.dtype)
    return out


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
