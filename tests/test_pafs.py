"""pafs stage: fitting, visibility, mirrored PAFs, and the stage on a tiny faces-format dataset."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headtex.detection import find_face
from headtex.geometry import Light, interpolate, project, rotation_matrix, surface_points, vertex_normals, view_direction
from headtex.datasets import PAFS, read_index, write_index
from headtex.io import UserError, load_npz, save_npz
from headtex.metrics import region_psnr
from headtex.fitting import CONTOUR_MODES, Fit, LandmarkLoss, fit_landmarks, fit_views, fitted_landmarks, jaw_region, landmark_nme, partial_texture
from headtex.pafs.core import PafsParams, process_image
from headtex.geometry.template import default_camera, lit_texture, render_view
from conftest import fit_arguments, params_for, texture_arguments, write_params_file

REPO = Path(__file__).resolve().parents[1]
SIZE = 256
BACKGROUND = (90, 120, 150)


def lit_textures(template, shape, light=Light()):
    """(texture for rendering, true lit texture at uv.size) of the template deformed by shape coefficients."""
    vertices = template.shaped(shape)
    render = lit_texture(template.albedo_render, vertices, template.faces, template.render_texel_triangle,
                         template.render_texel_barycentrics, light)
    truth = lit_texture(template.albedo, vertices, template.faces, template.texel_triangle,
                        template.texel_barycentrics, light)
    return render, truth


def render(template, yaw, pitch=0.0, roll=0.0, shape=None, texture=None):
    """A 256 px view of the (shaped) template and its true projected landmarks."""
    shape = np.zeros(len(template.basis_names)) if shape is None else shape
    texture = lit_textures(template, shape)[0] if texture is None else texture
    image, screen = render_view(template, template.shaped(shape), texture, yaw, SIZE, pitch, roll, BACKGROUND)
    return image, screen[template.landmark_ids, :2]


def true_fit(template, yaw, pitch=0.0, roll=0.0, shape=None):
    scale, translation = default_camera(SIZE)
    shape = np.zeros(len(template.basis_names)) if shape is None else shape
    return Fit(rotation_matrix(yaw, pitch, roll), scale, translation, shape)


def synthetic_landmarks(template, shape, yaw, pitch, roll):
    scale, translation = default_camera(SIZE)
    points = template.shaped(shape)[template.landmark_ids]
    return project(points, rotation_matrix(yaw, pitch, roll), scale, translation)[:, :2]


# --- fitting ------------------------------------------------------------------------------------------------

def test_fit_recovers_known_pose_and_shape_noise_free(template):
    """Noise-free landmarks: with modes that all move the landmarks (the first 12), pose, camera and coefficients
    come back; with every mode the landmarks are still matched, but one view's 68 points cannot pin all of them."""
    well_posed = dataclasses.replace(template, basis=template.basis[:12], basis_names=template.basis_names[:12])
    rng = np.random.default_rng(0)
    shape = rng.normal(size=12)
    landmarks = synthetic_landmarks(well_posed, shape, 30.0, 4.0, -3.0)
    fit = fit_landmarks(well_posed, landmarks, **fit_arguments(shape_regularisation=0.01, iterations=30, contour="fixed"))
    np.testing.assert_allclose(fit.pose, [30.0, 4.0, -3.0], atol=0.3)
    scale, translation = default_camera(SIZE)
    assert abs(fit.scale / scale - 1) < 0.005
    np.testing.assert_allclose(fit.translation, translation, atol=0.5)
    # At 30 deg of yaw each of these modes moves some landmark, so the coefficients themselves come back.
    assert np.sqrt(np.mean((fit.shape - shape) ** 2)) < 0.1
    assert fit.residual < 0.05
    # All modes (36): depth modes (face_depth, eye_depth, ...) and head_width trade with yaw and camera scale in one
    # view, so only the landmarks come back exactly (measured: yaw 0.67 deg off, scale -1.0 %, RMS 0.14, 0.044 px).
    shape = np.random.default_rng(0).normal(size=len(template.basis_names))
    fit = fit_landmarks(template, synthetic_landmarks(template, shape, 30.0, 4.0, -3.0),
                        **fit_arguments(shape_regularisation=0.01, iterations=30, contour="fixed"))
    assert fit.residual < 0.1
    np.testing.assert_allclose(fit.pose, [30.0, 4.0, -3.0], atol=1.5)
    assert abs(fit.scale / scale - 1) < 0.03


def test_fit_with_noisy_landmarks_stays_close(template):
    rng = np.random.default_rng(1)
    noise_px = 1.5
    scale, _ = default_camera(SIZE)
    yaw_errors, nmes, shape_errors, prior_errors = [], [], [], []
    for _ in range(12):
        shape = rng.normal(size=len(template.basis_names))
        yaw, pitch, roll = rng.uniform(-40, 40), rng.uniform(-8, 8), rng.uniform(-6, 6)
        truth = synthetic_landmarks(template, shape, yaw, pitch, roll)
        # shape_regularisation = the landmark noise variance in mm^2 (a unit-normal prior on the coefficients)
        fit = fit_landmarks(template, truth + rng.normal(scale=noise_px, size=truth.shape),
                            **fit_arguments(shape_regularisation=(noise_px / scale) ** 2, contour="fixed"))
        yaw_errors.append(abs(fit.pose[0] - yaw))
        nmes.append(landmark_nme(fitted_landmarks(template, fit), truth))
        shape_errors.append(np.sqrt(np.mean((fit.shape - shape) ** 2)))
        prior_errors.append(np.sqrt(np.mean(shape ** 2)))
    assert np.median(yaw_errors) < 2.0 and max(yaw_errors) < 4.0
    assert np.mean(nmes) < 0.015  # 1.5 px of noise on ~80 px of inter-ocular distance, averaged down by the fit
    # Better than guessing the mean shape, though far from exact: head_width (a 4 % stretch of x)
    # trades with the camera scale, and several modes barely move the 68 landmarks.
    assert np.mean(shape_errors) < 0.8 * np.mean(prior_errors)


def test_joint_fit_of_a_yaw_sweep_recovers_the_shape_better_than_single_views(template):
    """One shape for all views: the sweep shows the head from several sides, so the joint coefficients come back
    closer than any single view's (same noisy landmarks, same prior); one view alone is fit_landmarks exactly."""
    rng = np.random.default_rng(3)
    noise_px = 1.5
    scale, _ = default_camera(SIZE)
    regularisation = (noise_px / scale) ** 2
    joint_errors, single_errors = [], []
    for _ in range(6):
        shape = rng.normal(size=len(template.basis_names))
        views = [synthetic_landmarks(template, shape, yaw, rng.uniform(-5, 5), rng.uniform(-4, 4))
                 + rng.normal(scale=noise_px, size=(68, 2)) for yaw in (-40.0, -20.0, 0.0, 20.0, 40.0)]
        joint = fit_views(template, views, **fit_arguments(shape_regularisation=regularisation, contour="fixed"))
        assert all(np.array_equal(fit.shape, joint[0].shape) for fit in joint)
        joint_errors.append(np.sqrt(np.mean((joint[0].shape - shape) ** 2)))
        single_errors += [np.sqrt(np.mean((fit_landmarks(template, v, **fit_arguments(shape_regularisation=regularisation, contour="fixed")).shape
                                           - shape) ** 2)) for v in views]
    assert np.mean(joint_errors) < np.mean(single_errors)
    alone = fit_views(template, views[:1], **fit_arguments(shape_regularisation=regularisation, contour="fixed"))[0]
    single = fit_landmarks(template, views[0], **fit_arguments(shape_regularisation=regularisation, contour="fixed"))
    np.testing.assert_array_equal(alone.shape, single.shape)
    np.testing.assert_array_equal(alone.rotation, single.rotation)


def test_robust_landmark_loss_discounts_a_few_gross_detector_errors(template):
    """A detector that puts a few jaw points far off (dlib on a beard or a shadow): least squares bends the whole
    fit towards them, the Huber and Cauchy losses give them little weight and follow the other points."""
    rng = np.random.default_rng(3)
    shape = 0.5 * rng.normal(size=len(template.basis_names))
    truth = synthetic_landmarks(template, shape, 15.0, 3.0, -2.0)
    detected = truth + rng.normal(scale=1.0, size=truth.shape)
    detected[[5, 6, 7, 8]] += [0.0, 25.0]  # the chin 25 px (~30 % of the eye-corner distance) too low
    arguments = fit_arguments(contour="fixed")
    plain = fit_views(template, [detected], **arguments)[0]
    others = np.setdiff1d(np.arange(68), [5, 6, 7, 8])
    plain_error = landmark_nme(fitted_landmarks(template, plain)[others], truth[others])
    for kind in ("huber", "cauchy"):
        robust = fit_views(template, [detected], **arguments, loss=LandmarkLoss(kind, 0.05, (1.0,) * 5))[0]
        assert landmark_nme(fitted_landmarks(template, robust)[others], truth[others]) < 0.7 * plain_error
        assert robust.landmark_weights[[5, 6, 7, 8]].max() < 0.4 and np.median(robust.landmark_weights[others]) > 0.8
    # Measured (NME of the other 64 points): l2 3.6 %, huber 2.2 %, cauchy 1.9 %; chin weights 0.22, 0.03.
    # The l2 loss is the plain fit, bit for bit.
    same = fit_views(template, [detected], **arguments, loss=LandmarkLoss("l2", 0.05, (1.0,) * 5))[0]
    np.testing.assert_array_equal(same.shape, plain.shape)


def test_a_landmark_group_of_weight_zero_does_not_move_the_fit(template):
    """Group weights (jaw, brows, nose, eyes, mouth): a group at weight 0 may be anywhere, the fit is the same."""
    rng = np.random.default_rng(4)
    truth = synthetic_landmarks(template, 0.5 * rng.normal(size=len(template.basis_names)), -20.0, 2.0, 1.0)
    moved = truth.copy()
    moved[17:27] += rng.normal(scale=20.0, size=(10, 2))  # the brows scattered
    loss = LandmarkLoss("l2", 0.0, (1.0, 0.0, 1.0, 2.0, 1.0))
    arguments = fit_arguments(contour="fixed")
    a, b = (fit_views(template, [points], **arguments, loss=loss)[0] for points in (truth, moved))
    np.testing.assert_allclose(a.shape, b.shape, atol=1e-9)
    np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-9)
    assert not np.allclose(fit_views(template, [moved], **arguments)[0].shape, a.shape, atol=1e-3)
    with pytest.raises(ValueError, match="landmark group"):
        LandmarkLoss("l2", 0.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="landmark loss"):
        LandmarkLoss("tukey", 0.1, (1.0,) * 5)


def test_correction_moves_only_large_residuals_and_only_near_the_face(template):
    """The non-rigid correction: residuals under the threshold stay (the fit is kept), larger ones end within
    the threshold of the detection; vertices beyond the correction's reach never move."""
    rng = np.random.default_rng(4)
    truth = synthetic_landmarks(template, rng.normal(size=len(template.basis_names)), 15.0, 3.0, -2.0)
    moved = truth.copy()
    # A nose pushed 12 px sideways, which no mode follows (a lowered mouth no longer serves: the 36-mode template's
    # expression_mouth_open follows it to 0.05 x the eye distance).
    moved[27:36] += np.array([12.0, 0.0])
    inter_ocular = np.linalg.norm(truth[36] - truth[45])
    plain = fit_landmarks(template, moved, **fit_arguments(contour="fixed"))
    fit = fit_landmarks(template, moved, **fit_arguments(contour="fixed", correction=True, correction_threshold=0.03,
                                                        correction_radius_mm=30.0))
    before = np.linalg.norm(fitted_landmarks(template, plain, matched=True) - moved, axis=1)
    after = np.linalg.norm(fitted_landmarks(template, fit, matched=True) - moved, axis=1)
    assert after.max() <= 0.03 * inter_ocular + 0.05 and before.max() > 0.08 * inter_ocular
    small = before <= 0.03 * inter_ocular
    np.testing.assert_allclose(after[small], before[small], atol=0.5)
    vertices = template.shaped(fit.shape)
    distance = np.linalg.norm(vertices[:, None] - vertices[fit.landmark_ids][None], axis=2).min(1)
    assert np.abs(fit.offsets[distance > 30.0]).max() == 0.0 and np.abs(fit.offsets).max() > 1.0


def test_silhouette_contour_fixes_large_yaw(template):
    """dlib's far-side jaw points follow the cheek's outline: matching them to fixed vertices biases the yaw."""
    jaw = jaw_region(template)
    for yaw in (-40.0, 40.0):
        image, _ = render(template, yaw)
        detection = find_face(image, [("hog", 1)])
        errors = {mode: abs(fit_landmarks(template, detection.landmarks, **fit_arguments(contour=mode, jaw=jaw)).pose[0] - yaw)
                  for mode in CONTOUR_MODES}
        assert errors["silhouette"] < 4.0, errors
        assert errors["fixed"] > errors["silhouette"] + 3.0, errors


# --- partial textures -----------------------------------------------------------------------------------------

def test_paf_matches_truth_with_true_fit(template):
    rng = np.random.default_rng(2)
    shape = 0.7 * rng.normal(size=len(template.basis_names))
    texture, truth = lit_textures(template, shape, Light(direction=(-0.4, 0.3, 1.0)))
    image, _ = render(template, 25.0, 3.0, -2.0, shape, texture)
    paf, visible, cosine = partial_texture(image, template, true_fit(template, 25.0, 3.0, -2.0, shape), **texture_arguments())
    seen = visible > 0
    assert 0.3 < seen.sum() / template.texel_valid.sum() < 0.8
    assert not (seen & ~template.texel_valid).any()
    assert region_psnr(paf, truth, seen) > 28.0  # only resampling error when the geometry is right
    assert (paf[~seen] == 0).all() and (cosine[~seen] == 0).all() and (cosine[seen] > 0).all()


def test_visibility_at_yaw_60_hides_far_cheek(template):
    """At yaw 60 the cheek turned away is empty and the near one seen; seen texels store cos(view angle) * 255."""
    image, _ = render(template, 60.0)
    fit = true_fit(template, 60.0)
    _, visible, cosine = partial_texture(image, template, fit, **texture_arguments(max_view_angle_degrees=70.0))
    size = visible.shape[0]
    u = (np.arange(size) + 0.5) / size
    cheeks = np.zeros_like(template.texel_valid)
    cheeks[int(0.35 * size):int(0.6 * size)] = True  # cheek height band
    near = cheeks & template.texel_valid & (u < 0.3)[None]  # subject's right (-x) turns towards the camera
    far = cheeks & template.texel_valid & (u > 0.7)[None]
    assert (visible[near] > 0).mean() > 0.9
    assert (visible[far] > 0).mean() < 0.02
    # (The depth test on its own: test_visibility_at_yaw_60_hides_in_frame_texels_behind_the_nose.)
    normals = interpolate(vertex_normals(template.vertices, template.faces), template.faces,
                          np.maximum(template.texel_triangle, 0), template.texel_barycentrics)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    seen = visible > 0
    np.testing.assert_allclose(cosine[seen] / 255.0, (normals @ view_direction(fit.rotation))[seen], atol=0.01)


def occluded_by_mesh(points: np.ndarray, screen: np.ndarray, faces: np.ndarray, tolerance: float) -> np.ndarray:
    """Ray cast, one point at a time: is any triangle more than `tolerance` in front of the point along the view?

    Independent of the z-buffer: exact point-in-triangle tests in screen space against every triangle
    (weak perspective looks along screen z; larger z is nearer the camera).
    """
    corners = screen[faces]  # F,3,3
    origin, edge1, edge2 = corners[:, 0, :2], corners[:, 1, :2] - corners[:, 0, :2], corners[:, 2, :2] - corners[:, 0, :2]
    determinant = edge1[:, 0] * edge2[:, 1] - edge2[:, 0] * edge1[:, 1]
    usable = np.abs(determinant) > 1e-9
    determinant = np.where(usable, determinant, 1.0)
    occluded = np.zeros(len(points), bool)
    for k, point in enumerate(points):
        offset = point[:2] - origin
        b1 = (offset[:, 0] * edge2[:, 1] - edge2[:, 0] * offset[:, 1]) / determinant
        b2 = (edge1[:, 0] * offset[:, 1] - offset[:, 0] * edge1[:, 1]) / determinant
        b0 = 1.0 - b1 - b2
        depth = b0 * corners[:, 0, 2] + b1 * corners[:, 1, 2] + b2 * corners[:, 2, 2]
        occluded[k] = np.any(usable & (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (depth > point[2] + tolerance))
    return occluded


def test_visibility_at_yaw_60_hides_in_frame_texels_behind_the_nose(template):
    """Texels that face the camera and project inside the photo stay empty where the nose or cheek is in front."""
    yaw, tolerance_mm = 60.0, 3.0
    image, _ = render(template, yaw)
    fit = true_fit(template, yaw)
    _, visible, _ = partial_texture(image, template, fit, max_view_angle_degrees=90.0, depth_tolerance_mm=tolerance_mm)
    valid = template.texel_valid
    screen = project(template.vertices, fit.rotation, fit.scale, fit.translation)
    points = surface_points(screen, template.faces, template.texel_triangle[valid], template.texel_barycentrics[valid])
    normals = interpolate(vertex_normals(template.vertices, template.faces), template.faces,
                          np.maximum(template.texel_triangle, 0), template.texel_barycentrics)[valid]
    facing = normals @ view_direction(fit.rotation) > 0.2 * np.linalg.norm(normals, axis=1)
    in_frame = np.all((points[:, :2] >= 0) & (points[:, :2] <= SIZE - 1), axis=1)
    candidates = facing & in_frame
    hidden, seen = candidates & (visible[valid] == 0), candidates & (visible[valid] > 0)
    u = (np.nonzero(valid)[1] + 0.5) / valid.shape[1]
    assert hidden.sum() > 150  # measured 272: beside the nose and behind the cheekbone, on the far side
    assert (hidden & (u > 1 / 3) & (u < 2 / 3)).sum() > 100  # measured 186 in the face third
    rng = np.random.default_rng(0)
    sample_hidden = points[rng.choice(np.flatnonzero(hidden), 200, replace=False)]
    sample_seen = points[rng.choice(np.flatnonzero(seen), 200, replace=False)]
    tolerance = tolerance_mm * fit.scale
    # The z-buffer samples depth at the nearest pixel centre, so a few texels at an occlusion edge disagree.
    assert occluded_by_mesh(sample_hidden, screen, template.faces, tolerance).mean() > 0.9  # measured 0.97
    assert occluded_by_mesh(sample_seen, screen, template.faces, tolerance).mean() < 0.02  # measured 0.0


def test_mirrored_image_gives_mirrored_paf(template, dense):
    image, _ = render(template, 20.0)
    params = params_for(PafsParams, "pafs")
    original = process_image(image, template, params, dense=dense)
    mirrored = process_image(np.ascontiguousarray(image[:, ::-1]), template, params, dense=dense)
    assert abs(original.fit.pose[0] + mirrored.fit.pose[0]) < 3.0  # the mirror turns the other way
    # The UV layout is symmetric about u = 0.5 (the template only roughly): flip columns back.
    paf, visible = mirrored.paf[:, ::-1], mirrored.visible[:, ::-1]
    both = (original.visible > 0) & (visible > 0)
    union = (original.visible > 0) | (visible > 0)
    assert both.sum() / union.sum() > 0.75
    mean_difference = np.abs(original.paf[both].astype(float) - paf[both]).mean()
    assert mean_difference < 11.0
    # ... and unflipped they disagree far more (the test can fail).
    unflipped = (original.visible > 0) & (mirrored.visible > 0)
    assert unflipped.sum() / ((original.visible > 0) | (mirrored.visible > 0)).sum() < 0.6


def faces_stage_view(template_dir, identity: int, view: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(image, true landmarks, yaw) of one view of a synthetic identity exactly as the faces stage renders it."""
    from headtex.faces.cli import _synthetic_identity
    from headtex.faces.core import FacesParams

    config = params_for(FacesParams, "faces", source="synthetic")  # pinned views of the template's own face
    rendered = _synthetic_identity((str(template_dir), config, identity, "")).rendered
    return rendered.images[view], rendered.landmarks[view], float(rendered.yaw[view])


def test_cnn_fallback_finds_a_face_hog_misses(template, template_dir, dense):
    """Where dlib's HOG finds no face (identity 0 at yaw -50), the mmod CNN does, and the fit follows the head.
    (Re-pinned for the issue-14 shape scales and HOG resampling: identity 61 at yaw -50 is found by HOG now; of the
    18 views at yaw +-50 only the CNN finds among identities 0-63, dlib's predictor misplaces most landmarks, see
    the next test; this one fits.)"""
    image, truth, yaw = faces_stage_view(template_dir, 0, 0)
    # HOG upsampled once, where it misses this view (without upsampling, pafs' default, it finds it).
    assert process_image(image, template, params_for(PafsParams, "pafs", upsample=1, fallback_detector=None),
                         dense=dense) is None, "HOG finds this view now"
    result = process_image(image, template, params_for(PafsParams, "pafs", upsample=1), dense=dense)
    assert result is not None and result.detector == "cnn"
    assert landmark_nme(fitted_landmarks(template, result.fit), truth) < 0.15  # measured 0.059
    assert abs(result.fit.pose[0] - yaw) < 5.0  # measured 0.4 deg
    assert (result.visible > 0).mean() > 0.2


def test_cnn_fallback_landmarks_are_as_good_as_hogs(template, template_dir, dense):
    """A fallback face gets landmarks good enough to fit (identity 12 at yaw -50: HOG misses it). dlib's predictor
    misplaces the landmarks in the CNN's box (fitted NME 0.489 with the landmark fit, yaw -3 deg); the dense fit
    gives dlib's 68 no weight on a fallback face and follows the face mesh (measured 0.078, yaw -54.6 deg). Not yet
    on every such view: of the 18 views at yaw +-50 only the CNN finds among identities 0-63, the median goes
    0.315 -> 0.134 and 12 stay above 0.10 (docs/RESULTS.md, "Dense landmarks")."""
    image, truth, yaw = faces_stage_view(template_dir, 12, 0)
    result = process_image(image, template, params_for(PafsParams, "pafs", upsample=1), dense=dense)
    assert result is not None and result.detector == "cnn"
    assert landmark_nme(fitted_landmarks(template, result.fit), truth) < 0.10  # measured 0.078
    landmark_fit = process_image(image, template, params_for(PafsParams, "pafs", upsample=1, dense=False), dense=dense)
    assert landmark_nme(fitted_landmarks(template, landmark_fit.fit), truth) > 0.3  # the old fit: 0.489


def test_image_without_face_returns_none(template, dense):
    blank = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    assert process_image(blank, template, params_for(PafsParams, "pafs", fallback_detector=None), dense=dense) is None


def test_params_are_validated():
    with pytest.raises(UserError, match="detector"):
        params_for(PafsParams, "pafs", detector="sift")
    with pytest.raises(UserError, match="contour"):
        params_for(PafsParams, "pafs", contour="spline")
    with pytest.raises(UserError, match="max_view_angle"):
        params_for(PafsParams, "pafs", max_view_angle_degrees=120.0)
    with pytest.raises(UserError, match="landmark_loss"):
        params_for(PafsParams, "pafs", landmark_loss="tukey")
    with pytest.raises(UserError, match="landmark_group_weights"):
        params_for(PafsParams, "pafs", landmark_group_weights=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(UserError, match="landmark group"):
        params_for(PafsParams, "pafs", landmark_group_weights=[1.0, 1.0])


# --- the stage on a tiny faces-format dataset -------------------------------------------------------------------

def write_faces(folder: Path, template, identities: list[dict]) -> None:
    """A faces-stage dataset (docs/DATA.md) in one shard: each identity dict has images, yaw and truth."""
    arrays = {key: [] for key in ("images", "identity", "view", "yaw", "pitch", "roll", "landmarks")}
    for number, entry in enumerate(identities):
        views = len(entry["images"])
        arrays["images"].append(np.stack(entry["images"]))
        arrays["identity"].append(np.full(views, number, np.int64))
        arrays["view"].append(np.arange(views, dtype=np.int16))
        arrays["yaw"].append(np.asarray(entry["yaw"], np.float32))
        arrays["pitch"].append(np.zeros(views, np.float32))
        arrays["roll"].append(np.zeros(views, np.float32))
        arrays["landmarks"].append(np.stack(entry["landmarks"]).astype(np.float32))
    shard = {key: np.concatenate(value) for key, value in arrays.items()}
    shard["identity_ids"] = np.arange(len(identities), dtype=np.int64)
    shard["lit_texture"] = np.stack([entry["truth"] for entry in identities])
    shard["shape"] = np.stack([entry["shape"] for entry in identities]).astype(np.float32)
    save_npz(folder / "shard-00000.npz", **shard)
    write_index(folder, [{"file": "shard-00000.npz", "identities": list(range(len(identities))),
                          "count": int(len(shard["images"]))}],
                source="synthetic", image_size=SIZE, uv_size=template.albedo.shape[0], yaw_degrees=[-20.0, 20.0],
                views_per_identity=2, has_truth=True)


@pytest.fixture(scope="module")
def stage_run(template, template_dir, tmp_path_factory):
    """The stage on 3 identities x 2 views; identity 1's second view has no face."""
    folder = tmp_path_factory.mktemp("pafs")
    rng = np.random.default_rng(3)
    identities = []
    for number in range(3):
        shape = 0.5 * rng.normal(size=len(template.basis_names))
        texture, truth = lit_textures(template, shape)
        views = [render(template, yaw, shape=shape, texture=texture) for yaw in (-20.0, 20.0)]
        images = [image for image, _ in views]
        if number == 1:
            images[1] = np.full_like(images[1], 128)
        identities.append(dict(images=images, landmarks=[lm for _, lm in views], yaw=[-20.0, 20.0], truth=truth,
                               shape=shape))
    faces = folder / "faces"
    write_faces(faces, template, identities)
    params = write_params_file(folder / "params.yaml", "pafs", shard_size=2, preview_identities=1, fallback_detector=None)
    from headtex.pafs.cli import run

    metrics = run(params, faces, template_dir, folder / "pafs", folder / "pafs.json", workers=2)
    return folder, metrics


def test_stage_counts_a_view_without_face_and_drops_its_identity(stage_run):
    folder, metrics = stage_run
    assert metrics["identities_in"] == 3 and metrics["identities_rejected"] == 1 and metrics["identities_kept"] == 2
    assert metrics["views_no_face"] == 1 and metrics["no_face_lines"] == ["identity 1 view 1 (yaw 20): no face found"]
    assert metrics["identity_rejection_rate"] == pytest.approx(1 / 3, abs=1e-3)
    index = read_index(folder / "pafs", PAFS)
    assert index["rejected_identities"] == [1]
    assert [entry["identities"] for entry in index["shards"]] == [[0], [2]]  # shard_size 2 = one identity each
    assert json.loads((folder / "pafs.json").read_text())["views_out"] == 4


def test_stage_writes_the_documented_arrays(stage_run, template):
    """Shards hold the arrays docs/DATA.md lists, and the fit is as faithful as the stage measures it."""
    folder, metrics = stage_run
    size = template.albedo.shape[0]
    arrays = load_npz(folder / "pafs" / "shard-00001.npz")
    expected = {
        "identity": ((2,), np.int64), "view": ((2,), np.int16), "paf": ((2, size, size, 3), np.uint8),
        "visible": ((2, size, size), np.uint8), "landmarks": ((2, 68, 2), np.float32),
        "rotation": ((2, 3, 3), np.float32), "pose": ((2, 3), np.float32), "scale": ((2,), np.float32),
        "translation": ((2, 2), np.float32), "shape": ((2, len(template.basis_names)), np.float32),
        "view_cosine": ((2, size, size), np.uint8),
    }
    assert set(arrays) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert arrays[key].shape == shape and arrays[key].dtype == dtype, key
    assert arrays["identity"].tolist() == [2, 2] and arrays["view"].tolist() == [0, 1]
    assert set(np.unique(arrays["visible"])) == {0, 255}
    assert (arrays["paf"][arrays["visible"] == 0] == 0).all()
    # 36-mode template, photometric joint fit (5 steps, weight 128): measured 0.46 and 0.10 deg off (3 steps, weight 8:
    # one view 5.3 deg off, the views' colours then disagreed and the refinement stopped short)
    np.testing.assert_allclose(arrays["pose"][:, 0], [-20.0, 20.0], atol=2.0)
    assert (folder / "pafs" / "preview" / "identity-00000.png").is_file()
    fidelity = metrics["fidelity"]
    assert fidelity["views"] == 5  # fidelity covers every view with a face, kept or not
    # What the stage achieves here (docs/RESULTS.md, 64 identities x 11 views: 0.32 deg, 26.39 dB, 4.41 %).
    assert fidelity["yaw_error_degrees_median"] < 2.0  # measured 0.45 deg
    assert fidelity["paf_psnr_db_median"] > 25.0  # measured 27.77 dB
    assert fidelity["by_abs_yaw"]["abs_yaw_le_35"]["nme_fitted_mean"] < 0.03  # measured 1.8 %


def test_same_outputs_with_one_or_two_workers(stage_run, template_dir, tmp_path):
    """Every file pafs writes is byte-identical whatever the number of worker processes (the fixture ran 2)."""
    from headtex.pafs.cli import run

    folder, two = stage_run
    one = run(folder / "params.yaml", folder / "faces", template_dir, tmp_path / "pafs", tmp_path / "pafs.json",
              workers=1)
    files = sorted(p.relative_to(folder / "pafs") for p in (folder / "pafs").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "pafs") for p in (tmp_path / "pafs").rglob("*") if p.is_file())
    for name in files:
        assert (folder / "pafs" / name).read_bytes() == (tmp_path / "pafs" / name).read_bytes(), name
    timing = ("seconds", "images_per_second", "worker_ms_per_image", "worker_cpu_ms_per_image", "workers")
    assert {k: v for k, v in one.items() if k not in timing} == {k: v for k, v in two.items() if k not in timing}


def test_stage_on_photos_without_ground_truth(template, template_dir, tmp_path):
    """A `directory` faces dataset: no truth arrays, NaN yaw; the stage still writes PAFs, no fidelity."""
    images = np.stack([render(template, yaw)[0] for yaw in (-10.0, 10.0)] + [np.full((SIZE, SIZE, 3), 128, np.uint8)])
    faces = tmp_path / "faces"
    save_npz(faces / "shard-00000.npz", images=images, identity=np.array([0, 0, 1]), view=np.array([0, 1, 0], np.int16),
             yaw=np.full(3, np.nan, np.float32), pitch=np.full(3, np.nan, np.float32),
             roll=np.full(3, np.nan, np.float32), landmarks=np.full((3, 68, 2), np.nan, np.float32),
             identity_ids=np.array([0, 1]))
    write_index(faces, [{"file": "shard-00000.npz", "identities": [0, 1], "count": 3}], source="directory",
                image_size=SIZE, uv_size=template.albedo.shape[0], has_truth=False, names=[["a", ["1.png", "2.png"]],
                                                                                        ["b", ["1.png"]]])
    params = write_params_file(tmp_path / "params.yaml", "pafs", fallback_detector=None)
    from headtex.pafs.cli import run

    metrics = run(params, faces, template_dir, tmp_path / "pafs", tmp_path / "pafs.json", workers=1)
    assert "fidelity" not in metrics and "view_no_face_rate_abs_yaw_le_45" not in metrics
    assert metrics["no_face_lines"] == ["identity 1 view 0: no face found"] and metrics["identities_kept"] == 1
    index = read_index(tmp_path / "pafs", PAFS)
    assert index["source"] == "directory" and index["names"][0][0] == "a" and index["has_truth"] is False
    assert load_npz(tmp_path / "pafs" / "shard-00000.npz")["paf"].shape[0] == 2


def test_command_reports_missing_faces_in_one_line(tmp_path, template_dir):
    result = subprocess.run([sys.executable, "-m", "headtex", "pafs", "--faces", str(tmp_path / "nowhere"),
                             "--template", str(template_dir),
                             "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr
