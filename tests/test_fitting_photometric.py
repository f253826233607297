"""headtex.fitting.photometric: the multi-view colour refinement of a joint landmark fit (pafs.joint_fit)."""
import dataclasses

import numpy as np
import pytest

from headtex.fitting import fit_views, partial_texture, refine_views, texel_grid, visible_texels
from headtex.geometry import Light, project, rotation_matrix
from headtex.geometry.template import default_camera, lit_texture, render_view
from headtex.pafs.core import PafsParams, refinement_grids
from conftest import fit_arguments, params_for, texture_arguments

SIZE = 256
YAWS = (-40.0, -20.0, 0.0, 20.0, 40.0)


@pytest.fixture(scope="module")
def sweep(template):
    """Five renders of one known head (wide: head_width +1.5), one view 20 % brighter (exposure), with its
    true landmarks plus 1 px of noise."""
    rng = np.random.default_rng(7)
    shape = 0.3 * rng.normal(size=len(template.basis_names))
    shape[template.basis_names.index("head_width")] = 1.5
    vertices = template.shaped(shape)
    lit = lit_texture(template.albedo_render, vertices, template.faces, template.render_texel_triangle,
                      template.render_texel_barycentrics, Light())
    scale, translation = default_camera(SIZE)
    poses = [(yaw, rng.uniform(-3, 3), rng.uniform(-2, 2)) for yaw in YAWS]
    images, landmarks = [], []
    for index, (yaw, pitch, roll) in enumerate(poses):
        image, _ = render_view(template, vertices, lit, yaw, SIZE, pitch, roll, background=(70, 110, 160))
        if index == 3:
            image = np.clip(image * 1.2, 0, 255).astype(np.uint8)
        images.append(image)
        points = project(vertices[template.landmark_ids], rotation_matrix(yaw, pitch, roll), scale, translation)
        landmarks.append(points[:, :2] + rng.normal(scale=1.0, size=(68, 2)))
    return dict(shape=shape, poses=poses, images=images, landmarks=landmarks, scale=scale, translation=translation)


def registration_px(template, fits, sweep, grid) -> float:
    """Mean distance (px) between where the fits and the truth project the refinement's texels, visible ones."""
    errors = []
    truth_points = grid.points + np.tensordot(sweep["shape"], grid.basis, axes=1)
    for fit, (yaw, pitch, roll) in zip(fits, sweep["poses"]):
        seen = visible_texels(template, fit, SIZE, SIZE, grid.rows, grid.cols, 70.0, 3.0, 1)
        fitted = project(grid.points + np.tensordot(fit.shape, grid.basis, axes=1), fit.rotation, fit.scale,
                         fit.translation)[:, :2]
        true = project(truth_points, rotation_matrix(yaw, pitch, roll), sweep["scale"], sweep["translation"])[:, :2]
        errors.append(np.linalg.norm(fitted - true, axis=1)[seen])
    return float(np.mean(np.concatenate(errors)))


def refine(template, sweep, fits, weight: float):
    pafs = params_for(PafsParams, "pafs")
    return refine_views(sweep["images"], template, fits, sweep["landmarks"], refinement_grids(template, pafs),
                        pafs.photometric_blur_px, pafs.photometric_iterations, weight, pafs.shape_regularisation,
                        pafs.photometric_max_view_angle_degrees, pafs.depth_tolerance_mm)


def test_refinement_recovers_the_head_width_that_landmarks_trade_for_scale(template, sweep):
    """Start from what the landmark fit cannot rule out: the head 1.5 sd narrower, seen 4 % closer. The
    views' colours disagree in UV there, so the refinement moves head width and scale back; the same
    Gauss-Newton on the landmarks alone (weight 0) does not, and the texels land pixels closer to the truth."""
    width = template.basis_names.index("head_width")
    fits = fit_views(template, sweep["landmarks"], **fit_arguments())
    wrong = []
    for fit in fits:
        shape = fit.shape.copy()
        shape[width] = sweep["shape"][width] - 1.5
        wrong.append(dataclasses.replace(fit, shape=shape, scale=fit.scale * 1.04))
    grid = texel_grid(template, 2)
    # The views' term's weight against the shape prior (shape_regularisation, the noise of dlib's points, far
    # above this fixture's 1 px): 24 at 20 mm^2 (8 when the three colour channels each counted), kept in proportion.
    weight = 24.0 * params_for(PafsParams, "pafs").shape_regularisation / 20.0
    landmarks_only, photometric = refine(template, sweep, wrong, 0.0), refine(template, sweep, wrong, weight)
    assert all(np.array_equal(f.shape, photometric[0].shape) for f in photometric)  # still one shape

    def width_error(result):
        return abs(result[0].shape[width] - sweep["shape"][width])

    def scale_error(result):
        return float(np.mean([abs(f.scale / sweep["scale"] - 1) for f in result]))

    assert width_error(photometric) < 0.5 * width_error(landmarks_only)
    assert scale_error(photometric) < 0.5 * scale_error(landmarks_only)
    # Measured (params.yaml: luminance, texel stride 3, 4 steps per level): head width 0.56 vs 1.25 sd off, scale
    # 0.9 vs 2.7 %, texels 0.50 vs 0.97 px from the truth (colour, stride 2, 8 steps: 0.49 sd, 0.9 %, 0.48 px).
    registered = registration_px(template, photometric, sweep, grid)
    assert registered < 0.75 * registration_px(template, landmarks_only, sweep, grid) and registered < 0.8
    # The yaws stay right (the pose is refined too) and the landmarks are still followed.
    yaw_errors = [abs(f.pose[0] - pose[0]) for f, pose in zip(photometric, sweep["poses"])]
    assert max(yaw_errors) < 2.0
    assert max(f.residual for f in photometric) < 3.0


def test_refinement_improves_the_unperturbed_landmark_fit(template, sweep):
    """From the plain joint landmark fit, the refined fit registers the texels closer to where they belong."""
    fits = fit_views(template, sweep["landmarks"], **fit_arguments())
    grid = texel_grid(template, 2)
    refined = refine(template, sweep, fits, params_for(PafsParams, "pafs").photometric_weight)
    # Measured at params.yaml's weight 2304, stride 3, 4 steps: 0.64 vs 0.95 px (colour at 768, stride 2, 8 steps:
    # 0.41 px; stride 4 aliases: 0.98 px at 768).
    assert registration_px(template, refined, sweep, grid) < registration_px(template, fits, sweep, grid)


def test_one_view_is_returned_unchanged(template, sweep):
    fits = fit_views(template, sweep["landmarks"][:1], **fit_arguments())
    assert refine(template, {**sweep, "images": sweep["images"][:1], "landmarks": sweep["landmarks"][:1]},
                  fits, 8.0) == fits


def test_visible_texels_matches_partial_texture(template, sweep):
    """The refinement's visibility test is partial_texture's (full resolution), and close to it on the
    half-resolution z-buffer it uses."""
    fit = fit_views(template, sweep["landmarks"], **fit_arguments())[4]
    _, visible, _ = partial_texture(sweep["images"][4], template, fit, **texture_arguments())
    rows, cols = np.nonzero(template.texel_valid)
    pafs = params_for(PafsParams, "pafs")
    full = visible_texels(template, fit, SIZE, SIZE, rows, cols, pafs.max_view_angle_degrees,
                          pafs.depth_tolerance_mm, 1)
    np.testing.assert_array_equal(full, visible[rows, cols] > 0)
    half = visible_texels(template, fit, SIZE, SIZE, rows, cols, pafs.max_view_angle_degrees,
                          pafs.depth_tolerance_mm, 2)
    assert np.mean(half != full) < 0.02


def test_texel_jacobian_is_the_image_gradient_through_the_screen_jacobian():
    """The texels' Jacobian (shape columns from the unrotated basis) equals the image gradient times the screen
    Jacobian of the rotated basis, for every view's rows and every channel."""
    from headtex.fitting.photometric import _rotated, _screen_jacobian, _texel_jacobian
    rng = np.random.default_rng(3)
    views, count, rows, channels = 3, 5, 40, 2
    view_of = np.sort(rng.integers(0, views, rows))
    bounds = np.searchsorted(view_of, np.arange(views + 1))
    rotations = np.stack([rotation_matrix(*rng.uniform(-40, 40, 3)) for _ in range(views)])
    scales = rng.uniform(0.5, 2.0, views)[view_of]
    camera = rng.normal(size=(rows, 3))
    basis = rng.normal(size=(count, rows, 3))
    gradient_x, gradient_y = rng.normal(size=(rows, channels)), rng.normal(size=(rows, channels))
    dx, dy = _screen_jacobian(camera, _rotated(basis, rotations, bounds), scales)
    expected = gradient_x[:, :, None] * dx[:, None] + gradient_y[:, :, None] * dy[:, None]
    texel_basis = basis.transpose(1, 2, 0).astype(np.float32)
    got = _texel_jacobian(camera, texel_basis, rotations, scales, view_of, gradient_x, gradient_y)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # float32


def test_normal_equations_are_those_of_the_residual_against_the_views_mean():
    """The colour term's normal matrix (per-view blocks + the reference's share) and gradient equal the dense
    (J_v - mean J)^T W (J_v - mean J) and (J_v - mean J)^T W r of residuals taken against the views' mean texture."""
    from headtex.fitting.photometric import POSE_PARAMETERS, _accumulate, _photometric_gradient, _reference_terms
    rng = np.random.default_rng(5)
    views, texels, count, channels = 4, 30, 3, 2
    seen = rng.random((views, texels)) < 0.6
    view_of, texel_of = np.nonzero(seen)
    bounds = np.searchsorted(view_of, np.arange(views + 1))
    size = POSE_PARAMETERS * views + count
    local = rng.normal(size=(len(view_of), channels, POSE_PARAMETERS + count)).astype(np.float32)
    residual, weights = rng.normal(size=(len(view_of), channels)), rng.uniform(0.5, 2.0, (len(view_of), channels))
    full = np.zeros((len(view_of), channels, size))  # each row's Jacobian in the whole parameter vector
    for row, v in enumerate(view_of):
        full[row, :, POSE_PARAMETERS * v: POSE_PARAMETERS * (v + 1)] = local[row, :, :POSE_PARAMETERS]
        full[row, :, POSE_PARAMETERS * views:] = local[row, :, POSE_PARAMETERS:]
    counts = np.bincount(texel_of, minlength=texels)
    mean = np.stack([full[texel_of == t].sum(0) for t in range(texels)]) / np.maximum(counts, 1)[:, None, None]
    centred = (full - mean[texel_of]).reshape(-1, size)
    normal = np.zeros((size, size))
    _accumulate(normal, local.reshape(-1, local.shape[2]), weights.ravel(), bounds * channels, views)
    _reference_terms(normal, local, weights, texel_of, bounds, texels)
    np.testing.assert_allclose(normal, centred.T @ (weights.ravel()[:, None] * centred), rtol=1e-4, atol=1e-3)
    # The residual is against the mean, so its gradient is the centred Jacobian's.
    gradient = _photometric_gradient(local, residual, weights, texel_of, bounds, texels, size)
    np.testing.assert_allclose(gradient, centred.T @ (weights * residual).ravel(), rtol=1e-4, atol=1e-3)
