"""Photometric multi-view refinement: one shape and a pose per view, moved until the views agree in UV.

Every view of one head samples the same surface colour at a texel (for the synthetic identities exactly: the
light is fixed to the head; for photos up to a per-view, per-channel gain and bias, which are estimated). The
landmark fit cannot tell the head's width from the camera's scale (docs/RESULTS.md), but a wrong width puts
the same hairline, ear or eyebrow at different texels in different views. This module minimises, by damped
Gauss-Newton over the identity's shape coefficients and every view's rotation, scale and 2D offset,

    photometric_weight * sum_views 68/n_v sum_texels huber(gain_v * I_v(project_v(X_t)) + bias_v - T_t) / (5 levels)^2
    + sum_views sum_landmarks |landmark error / scale|^2 (mm^2, the landmark fit's own term)
    + views * shape_regularisation * |shape|^2,

where T is the texture the views agree on (their per-texel mean, re-estimated every step), X_t the texel's
point on the shaped template and the images are blurred coarse-to-fine (a wide basin first, then detail);
each view's texels together weigh photometric_weight times its 68 landmarks. Visibility (z-buffer + view
angle) comes from the fits at the start of each level; texels seen by one view only have nothing to agree with and
are left out.
Measured on 16 synthetic identities (docs/RESULTS.md): PAF PSNR 23.65 -> 25.9 dB, yaw error 2.3 -> 0.8 deg.
On the 36-mode template (64 identities, 5 steps per level, weight 128): PAF PSNR 22.1 -> 26.4 dB, yaw 2.0 -> 0.3 deg.
On issue 14's wider people (128 identities; texel stride 2, 8 steps, weight 768): PAF PSNR 21.5 -> 28.3 dB, yaw
2.5 -> 0.15 deg, landmark NME |yaw| <= 35 6.8 -> 3.8 %. A stride of 4 (~1000 texels a view) aliases: above weight
~256 it registers exact-landmark texels worse than the landmarks alone.
Coarse to fine, each level with its own blur, texel stride and number of steps: most steps on a heavily blurred
image at a coarse stride (cheap, a wide basin), a few at a fine one (exact registration). Dense fit, 16 identities:
strides 5 then 3 with 10 + 3 steps, NME |yaw| <= 35 3.24 %, PSNR 28.7 dB, at ~1/3 of the cost of stride 2 with
8 + 8 steps (3.10 %, 29.1 dB); compared in luminance instead of colour the views lose 0.5 % and 1.1 dB. The
Jacobian is float32 and its shape columns come from the unrotated basis (one 1x3 by 3xK product per texel).
Arrays in, arrays out: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from headtex.fitting.landmarks import Fit
from headtex.fitting.texture import visible_texels
from headtex.geometry.template import Template

POSE_PARAMETERS = 6  # rotation increment (3, camera frame), log scale, 2D offset (screen pixels)
HUBER_GREY_LEVELS = 12.0  # colour residuals beyond this (8-bit levels) count linearly: specular spots, hair edges
MIN_VIEWS_PER_TEXEL = 2  # a texel enters the agreement only where at least this many views see it
DAMPING = 1e-3  # Levenberg-Marquardt: relative weight of the Hessian's diagonal added to it
PHOTOMETRIC_NOISE = 5.0  # 8-bit grey levels: the colour disagreement between views that weighs like 1 mm^2
# Visibility is decided once per level on a z-buffer half the image's side: the refinement moves the head by a few
# pixels (16 identities, landmark fit, one grid: per level rather than once +0.03 dB, full resolution +0.07 dB).
VISIBILITY_DOWNSCALE = 2
GAIN_RANGE = (0.5, 2.0)  # per-view colour gains beyond this are implausible (exposure), clipped


@dataclass
class TexelGrid:
    """Texels of the UV layout used by the refinement (a regular subsample), with their template geometry."""

    rows: np.ndarray  # T texel rows
    cols: np.ndarray  # T texel columns
    points: np.ndarray  # T,3 float64 on the mean template (mm)
    basis: np.ndarray  # K,T,3 float64 mm per unit shape coefficient


def texel_grid(template: Template, stride: int) -> TexelGrid:
    """Every `stride`-th valid texel in u and v, with its point on the template and the shape basis there."""
    valid = template.texel_valid.copy()
    keep = np.zeros_like(valid)
    keep[::stride, ::stride] = True
    rows, cols = np.nonzero(valid & keep)
    corners = template.faces[template.texel_triangle[rows, cols]]  # T,3
    weights = template.texel_barycentrics[rows, cols].astype(np.float64)  # T,3
    points = np.einsum("tk,tkc->tc", weights, template.vertices[corners].astype(np.float64))
    basis = np.einsum("tk,mtkc->mtc", weights, template.basis[:, corners].astype(np.float64))
    return TexelGrid(rows, cols, points, basis)


def _image_stack(image: np.ndarray, sigma: float) -> np.ndarray:
    """The image blurred by sigma (pixels) with its x and y derivatives: H,W,3C float32."""
    values = image.astype(np.float32)
    if sigma > 0:
        values = cv2.GaussianBlur(values, (0, 0), sigma)
    gx = cv2.Sobel(values, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(values, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE)
    return np.concatenate([np.atleast_3d(values), np.atleast_3d(gx), np.atleast_3d(gy)], axis=2)


def _sample(stack: np.ndarray, screen: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a stack at screen points (N,2 pixels, centres at integers): N,channels."""
    width = max(1, min(len(screen), 4096))
    rows = -(-len(screen) // width)
    grid = np.zeros((rows * width, 2), dtype=np.float32)
    grid[: len(screen)] = screen
    grid = grid.reshape(rows, width, 2)
    sampled = cv2.remap(stack, grid[..., 0], grid[..., 1], interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(rows * width, -1)[: len(screen)]


def _screen_jacobian(camera_points: np.ndarray, camera_basis: np.ndarray, scales: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """d(screen x, y) / d(rotation increment, log scale, offset, shape) per point: two N,6+K arrays.

    camera_points: N,3 points in the camera frame (R X); camera_basis: K,N,3 the shape basis there (R B);
    scales: N, each point's camera scale. Rotation increments act on the left (R <- exp([w]x) R), so
    d(RX) = w x RX.
    """
    x, y, z = (scales[:, None] * camera_points).T
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    dx = np.column_stack([zeros, z, -y, x, ones, zeros, scales[:, None] * camera_basis[:, :, 0].T])
    dy = np.column_stack([z, zeros, -x, -y, zeros, ones, -scales[:, None] * camera_basis[:, :, 1].T])
    return dx, dy


def _texel_jacobian(camera: np.ndarray, basis: np.ndarray, rotations: np.ndarray, scales: np.ndarray,
                    view_of: np.ndarray, gradient_x: np.ndarray, gradient_y: np.ndarray) -> np.ndarray:
    """d(sampled value) / d(pose, shape) per texel and channel: M,C,6+K float32, the image gradient times
    _screen_jacobian, without rotating the shape basis: the shape columns are a B with a = scale (g_x R[0] - g_y R[1])
    (basis: the texels' shape basis, M,3,K float32), one small product per texel."""
    x, y, z = (scales[:, None] * camera).T
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    pose_x = np.stack([zeros, z, -y, x, ones, zeros], axis=1)  # M,6
    pose_y = np.stack([z, zeros, -x, -y, zeros, ones], axis=1)
    pose = gradient_x[:, :, None] * pose_x[:, None] + gradient_y[:, :, None] * pose_y[:, None]  # M,C,6
    rotation = rotations[view_of]  # M,3,3
    a = scales[:, None, None] * (gradient_x[:, :, None] * rotation[:, None, 0]
                                 - gradient_y[:, :, None] * rotation[:, None, 1])  # M,C,3
    return np.concatenate([pose.astype(np.float32), np.matmul(a.astype(np.float32), basis)], axis=2)


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(omega.reshape(3, 1))[0]


def _huber(residual: np.ndarray, threshold: float) -> np.ndarray:
    """IRLS weights of the Huber loss per residual."""
    size = np.abs(residual)
    return np.where(size <= threshold, 1.0, threshold / np.maximum(size, 1e-12))


def refine_views(images: list[np.ndarray], template: Template, fits: list[Fit], landmarks: list[np.ndarray],
                 grids: list[TexelGrid], blur_sigmas: list[float], iterations: list[int], photometric_weight: float,
                 shape_regularisation: float, max_view_angle_degrees: float,
                 depth_tolerance_mm: float) -> list[Fit]:
    """Refine one identity's joint landmark fit (one shape, a pose per view) by multi-view colour agreement.

    images: the views (H,W,C uint8, one size); fits: their landmark fits (one shape); landmarks: the
    detections (68,2 pixels) the fits matched (Fit.landmark_ids, weights Fit.landmark_weights). Per level, coarse
    to fine: grids (the texels compared), blur_sigmas (pixels) and iterations (Gauss-Newton steps). Returns new
    fits with the refined shape and poses (residual: RMS landmark distance after refinement; no correction).
    Fewer than two views: the fits unchanged (nothing to agree with).
    """
    if not len(grids) == len(blur_sigmas) == len(iterations):
        raise ValueError(f"one texel grid, blur and step count per level, not {len(grids)}, {len(blur_sigmas)}, "
                         f"{len(iterations)}")
    if len(fits) < 2:
        return list(fits)
    views, count = len(fits), template.basis.shape[0]
    size = POSE_PARAMETERS * views + count
    height, width, channels = images[0].shape
    rotations = np.stack([f.rotation for f in fits]).astype(np.float64)  # V,3,3
    scales = np.array([f.scale for f in fits], dtype=np.float64)
    offsets = np.stack([f.translation for f in fits]).astype(np.float64)  # V,2 screen (y down)
    shape = fits[0].shape.astype(np.float64).copy()
    ids = np.stack([f.landmark_ids if f.landmark_ids is not None else template.landmark_ids for f in fits])  # V,L
    lm_weights = np.stack([f.landmark_weights if f.landmark_weights is not None else np.ones(ids.shape[1])
                           for f in fits]).astype(np.float64)
    lm_points = template.vertices[ids].astype(np.float64)  # V,L,3
    lm_basis = template.basis[:, ids].astype(np.float64)  # K,V,L,3
    targets = np.stack(landmarks).astype(np.float64)  # V,L,2
    lm_view = np.repeat(np.arange(views), ids.shape[1])
    lm_bounds = np.searchsorted(lm_view, np.arange(views + 1))
    for grid, sigma, steps in zip(grids, blur_sigmas, iterations):
        if steps == 0:
            continue
        # All views' blurred images and gradients stacked vertically: one lookup samples every view.
        stack = np.concatenate([_image_stack(image, sigma) for image in images], axis=0)
        # The level's texels seen (z-buffer + view angle) through the fits as they are now: 16 identities, PSNR
        # 28.67 dB against 28.38 with the visibility of the fits given for every level.
        current = [replace(f, rotation=rotations[v], scale=float(scales[v]), translation=offsets[v],
                           shape=shape.copy(), offsets=None) for v, f in enumerate(fits)]
        seen = np.stack([visible_texels(template, fit, height, width, grid.rows, grid.cols,
                                        max_view_angle_degrees, depth_tolerance_mm, VISIBILITY_DOWNSCALE)
                         for fit in current])  # V,T
        seen &= (seen.sum(0) >= MIN_VIEWS_PER_TEXEL)[None]
        view_of, texel_of = np.nonzero(seen)  # grouped by view
        bounds = np.searchsorted(view_of, np.arange(views + 1))
        per_view = np.diff(bounds)
        texel_basis = np.ascontiguousarray(grid.basis[:, texel_of].transpose(1, 2, 0), dtype=np.float32)  # M,3,K
        shared, shared_of = np.unique(texel_of, return_inverse=True)  # texel_of numbered over the shared texels
        shared_count = len(shared)
        gains, biases = np.ones((views, channels)), np.zeros((views, channels))
        for step_index in range(steps):
            points = (grid.points + np.tensordot(shape, grid.basis, axes=1))[texel_of]  # M,3
            camera, screen = _posed(points, rotations, scales, offsets, bounds, view_of)
            screen[:, 0] = np.clip(screen[:, 0], 0, width - 1)
            screen[:, 1] = np.clip(screen[:, 1], 0, height - 1) + height * view_of
            sampled = _sample(stack, screen).astype(np.float64)
            colour, gx, gy = sampled[:, :channels], sampled[:, channels:2 * channels], sampled[:, 2 * channels:]
            gains, biases = _photometric_normalisation(colour, view_of, texel_of, gains, biases, len(grid.points))
            colour = colour * gains[view_of] + biases[view_of]
            reference = _mean_by(colour, texel_of, len(grid.points))
            residual = colour - reference[texel_of]  # M,C
            robust = _huber(residual, HUBER_GREY_LEVELS) * (
                photometric_weight * ids.shape[1] / (np.maximum(per_view, 1) * PHOTOMETRIC_NOISE ** 2))[view_of, None]
            jacobian = _texel_jacobian(camera, texel_basis, rotations, scales[view_of], view_of,
                                       gx * gains[view_of], gy * gains[view_of])  # M,C,P
            normal = np.zeros((size, size))
            _accumulate(normal, jacobian.reshape(-1, jacobian.shape[2]), robust.ravel(), bounds * channels, views)
            _reference_terms(normal, jacobian, robust, shared_of, bounds, shared_count)
            right = _photometric_gradient(jacobian, residual, robust, shared_of, bounds, shared_count, size)
            # The landmark term (errors in mm, as the landmark fit weighs them).
            lm_camera, predicted = _posed((lm_points + np.tensordot(shape, lm_basis, axes=1)).reshape(-1, 3),
                                          rotations, scales, offsets, lm_bounds, lm_view)
            dx, dy = _screen_jacobian(lm_camera, _rotated(lm_basis.reshape(count, -1, 3), rotations, lm_bounds),
                                      scales[lm_view])
            jacobian = np.stack([dx, dy], axis=1).reshape(-1, dx.shape[1])
            weight = np.repeat(lm_weights.ravel() / scales[lm_view] ** 2, 2)
            _accumulate(normal, jacobian, weight, 2 * lm_bounds, views)
            right += _gradient(jacobian, weight * (predicted - targets.reshape(-1, 2)).ravel(), 2 * lm_bounds, size)
            prior = views * shape_regularisation
            normal[-count:, -count:] += prior * np.eye(count)
            right[-count:] += prior * shape
            normal += DAMPING * np.diag(np.diag(normal)) + 1e-9 * np.eye(size)
            step = -np.linalg.solve(normal, right)
            pose = step[:POSE_PARAMETERS * views].reshape(views, POSE_PARAMETERS)
            rotations = np.stack([_rodrigues(delta[:3]) @ rotation for delta, rotation in zip(pose, rotations)])
            scales = scales * np.exp(pose[:, 3])
            offsets = offsets + pose[:, 4:6]
            shape = shape + step[-count:]
    _, predicted = _posed((lm_points + np.tensordot(shape, lm_basis, axes=1)).reshape(-1, 3), rotations, scales,
                          offsets, lm_bounds, lm_view)
    error = np.sum((predicted.reshape(targets.shape) - targets) ** 2, axis=2)  # V,L
    residuals = np.sqrt(np.sum(error * lm_weights, axis=1) / np.maximum(lm_weights.sum(1), 1e-12))
    return [replace(fit, rotation=rotations[v], scale=float(scales[v]), translation=offsets[v], shape=shape.copy(),
                    residual=float(residuals[v]), offsets=None) for v, fit in enumerate(fits)]


def _posed(points: np.ndarray, rotations: np.ndarray, scales: np.ndarray, offsets: np.ndarray, bounds: np.ndarray,
           view_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (N,3) and screen points (N,2, y down) of head-frame points grouped by view
    (rows bounds[v]:bounds[v+1], view_of per row) under each view's camera."""
    camera = _rotated(points, rotations, bounds)
    scale = scales[view_of]
    screen = np.column_stack([scale * camera[:, 0] + offsets[view_of, 0], -scale * camera[:, 1] + offsets[view_of, 1]])
    return camera, screen


def _rotated(vectors: np.ndarray, rotations: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Vectors (..., N, 3) rotated into their view's camera frame; rows bounds[v]:bounds[v+1] are view v's."""
    out = np.empty_like(vectors)
    for v, rotation in enumerate(rotations):
        out[..., bounds[v]:bounds[v + 1], :] = vectors[..., bounds[v]:bounds[v + 1], :] @ rotation.T
    return out


def _mean_by(values: np.ndarray, index: np.ndarray, length: int) -> np.ndarray:
    """Per index the mean of the rows of values (length,C; 0 where none)."""
    counts = np.maximum(np.bincount(index, minlength=length), 1)
    return np.stack([np.bincount(index, weights=values[:, c], minlength=length) for c in range(values.shape[1])],
                    axis=1) / counts[:, None]


def _photometric_normalisation(colour: np.ndarray, view_of: np.ndarray, texel_of: np.ndarray, gains: np.ndarray,
                               biases: np.ndarray, texels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per view and channel the gain and bias mapping its colours onto the views' mean (least squares), given
    the current ones; normalised to a geometric-mean gain of 1 and a mean bias of 0 (the texture's own
    brightness is not the views' to choose)."""
    reference = _mean_by(colour * gains[view_of] + biases[view_of], texel_of, texels)[texel_of]
    views = len(gains)
    n = np.maximum(np.bincount(view_of, minlength=views), 1)[:, None]

    def total(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(view_of, weights=values[:, c], minlength=views)
                         for c in range(values.shape[1])], axis=1)

    mean_c, mean_r = total(colour) / n, total(reference) / n
    variance = total(colour ** 2) / n - mean_c ** 2
    covariance = total(colour * reference) / n - mean_c * mean_r
    gains = np.clip(covariance / np.maximum(variance, 1e-6), *GAIN_RANGE)
    gains /= np.exp(np.log(gains).mean(0, keepdims=True))
    biases = mean_r - gains * mean_c
    return gains, biases - biases.mean(0, keepdims=True)


def _reference_terms(normal: np.ndarray, jacobian: np.ndarray, weights: np.ndarray, texel_of: np.ndarray,
                     bounds: np.ndarray, texels: int) -> None:
    """The reference texture's share of the normal matrix (of the gradient: _photometric_gradient): it is the views'
    mean, so it moves with every view that sees the texel (d r_v = J_v - mean_w J_w); texel_of: per row its texel
    among `texels` shared ones. Without this term each step only pulls the views
    towards the current, misregistered mean, and the fit creeps along the width/scale valley (measured on
    tests/test_fitting_photometric.py's sweep from a 1.5 sd head-width error, 2 x 5 steps: texels 2.0 px from
    the truth without, 0.64 px with; PAF PSNR on 16 identities 25.9 -> 26.8 dB)."""
    views, size, channels = len(bounds) - 1, len(normal), jacobian.shape[1]
    # float32: these products dominate the refinement's cost, and the damped system does not need float64 here.
    total = np.zeros((texels, channels, size), dtype=np.float32)  # per texel: sum over views of J (all columns)
    weighted = np.zeros((texels, channels, size), dtype=np.float32)  # ... and of w J
    shape_columns = slice(POSE_PARAMETERS * views, size)
    for v in range(views):
        rows = slice(bounds[v], bounds[v + 1])
        texels_v, pose_columns = texel_of[rows], slice(POSE_PARAMETERS * v, POSE_PARAMETERS * (v + 1))
        view_weighted = weights[rows, :, None] * jacobian[rows]
        # A view sees a texel once (no repeated indices); its pose columns are its own, the shape's are shared.
        total[texels_v, :, pose_columns] = jacobian[rows, :, :POSE_PARAMETERS]
        weighted[texels_v, :, pose_columns] = view_weighted[:, :, :POSE_PARAMETERS]
        total[texels_v, :, shape_columns] += jacobian[rows, :, POSE_PARAMETERS:]
        weighted[texels_v, :, shape_columns] += view_weighted[:, :, POSE_PARAMETERS:]
    seen = np.maximum(np.bincount(texel_of, minlength=texels), 1).astype(np.float32)
    mean = (total / seen[:, None, None]).reshape(-1, size)  # J-bar per texel and channel
    weight_sum = np.stack([np.bincount(texel_of, weights=weights[:, c], minlength=texels)
                           for c in range(channels)], axis=1).reshape(-1)
    cross = (mean.T @ weighted.reshape(-1, size)).astype(np.float64)
    normal += ((mean * weight_sum[:, None].astype(np.float32)).T @ mean).astype(np.float64) - cross - cross.T


def _photometric_gradient(jacobian: np.ndarray, residual: np.ndarray, weights: np.ndarray, texel_of: np.ndarray,
                          bounds: np.ndarray, texels: int, size: int) -> np.ndarray:
    """The colour term's gradient (the normal equations' right side), the reference's share included: per row J^T
    (w r - the mean of w r over the views at its texel); J: M,C,P, texel_of: per row its texel among `texels`."""
    channels = residual.shape[1]
    weighted = weights * residual
    mean = _mean_by(weighted, texel_of, texels)
    return _gradient(jacobian.reshape(-1, jacobian.shape[2]), (weighted - mean[texel_of]).ravel(), bounds * channels,
                     size)


def _gradient(jacobian: np.ndarray, multiplier: np.ndarray, bounds: np.ndarray, size: int) -> np.ndarray:
    """sum over rows of J^T m, each view's rows (bounds[v]:bounds[v+1]) into its pose block and the shared shape."""
    right, views = np.zeros(size), len(bounds) - 1
    multiplier = multiplier.astype(jacobian.dtype)
    for v in range(views):
        rows = slice(bounds[v], bounds[v + 1])
        columns = np.r_[POSE_PARAMETERS * v: POSE_PARAMETERS * (v + 1), POSE_PARAMETERS * views: size]
        right[columns] += jacobian[rows].T @ multiplier[rows]
    return right


def _accumulate(normal: np.ndarray, jacobian: np.ndarray, weights: np.ndarray, bounds: np.ndarray, views: int
                ) -> None:
    """Add weighted least-squares terms J^T W J to the normal matrix; rows bounds[v]:bounds[v+1] belong to view v
    (its pose block and the shared shape block)."""
    weighted = jacobian * weights[:, None].astype(jacobian.dtype)
    for v in range(views):
        rows = slice(bounds[v], bounds[v + 1])
        columns = np.r_[POSE_PARAMETERS * v: POSE_PARAMETERS * (v + 1), POSE_PARAMETERS * views: len(normal)]
        normal[np.ix_(columns, columns)] += weighted[rows].T @ jacobian[rows]
