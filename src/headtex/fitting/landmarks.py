"""Fitting (shared by pafs and reconstruct): 68 landmarks -> template fit (pose + shape) -> partial UV texture.

Camera: weak perspective (scaled orthographic), as in headtex.geometry.project:
screen x = s (R X)_x + t_x, screen y = -s (R X)_y + t_y, screen depth = s (R X)_z.
Fitting follows eos (Huber et al. 2016): alternate (a) the pose from 2D-3D landmark
correspondences (affine camera, nearest scaled rotation, orthographic Procrustes),
(b) the shape coefficients by Tikhonov-regularised linear least squares given the
pose, (c) re-matching of the jaw-contour landmarks to the silhouette of the face.
Arrays in, arrays out: no I/O, no globals.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from headtex.detection import DETECTORS
from headtex.geometry import euler_degrees, project, vertex_normals
from headtex.geometry.rbf import wendland_field
from headtex.geometry.template import Template
from headtex.params import param

JAW = np.arange(17)  # ibug 0-16: the face contour, which dlib places on the face's outline
OUTER_EYE_CORNERS = (36, 45)  # inter-ocular distance for the NME

# How the 17 jaw landmarks are matched to the mesh (measured in docs/RESULTS.md):
#   fixed:      always the template's annotated jaw vertices (wrong beyond ~15 deg of yaw, where
#               dlib's contour follows the silhouette of the far cheek);
#   silhouette: each iteration, jaw landmarks on the side turned away (and the chin's) move to the
#               nearest projected vertex of the cheek/jaw region whose normal lies across the view;
#   drop:       fixed vertices, but jaw landmarks on the side turned away get no weight.
CONTOUR_MODES = ("fixed", "silhouette", "drop")
FAR_SIDE_YAW_DEGREES = 5.0  # beyond this yaw one side of the jaw counts as turned away
SILHOUETTE_COSINE = 0.3  # a vertex is on the silhouette when |cos(normal, view)| is below this
SILHOUETTE_REACH_MM = 10.0  # a jaw landmark further than this from every silhouette vertex keeps its vertex

LANDMARK_LOSSES = ("l2", "huber", "cauchy")
LANDMARK_GROUPS = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
                   "mouth": slice(48, 68)}  # ibug 68-point groups, in the order of LandmarkLoss.group_weights

PROCRUSTES_REFINEMENTS = 3  # orthographic Procrustes steps after the affine camera (the 2D error stops falling)


@dataclass
class FitParams:
    """The fitting keys of the `pafs:` section (reconstruct reads them too): detection, fit and visibility."""

    detector: str = param("dlib face detector: hog (frontal, fast) | cnn (mmod CNN)", choices=DETECTORS)
    fallback_detector: str | None = param("tried only where `detector` finds no face; null = none",
                                          choices=DETECTORS + (None,))
    fallback_upsample: int = param("times the fallback detector upsamples the image", ge=0)
    shape_regularisation: float = param("Tikhonov weight on the shape coefficients (landmark noise variance, mm^2)",
                                        ge=0)
    fit_iterations: int = param("pose / contour / shape alternations", ge=1)
    contour: str = param("jaw landmarks: silhouette | fixed | drop", choices=CONTOUR_MODES)
    max_view_angle_degrees: float = param("texels seen more obliquely than this are left out", gt=0, le=90)
    depth_tolerance_mm: float = param("a texel is occluded when the fitted mesh lies more than this in front of it",
                                      ge=0)
    correction: bool = param("after the pose + shape fit, move the mesh smoothly onto the landmarks it misses")
    correction_threshold: float = param("landmark residuals up to this share of the eye-corner distance count as "
                                        "detector noise and are not corrected", ge=0, le=1)
    correction_radius_mm: float = param("reach of the correction on the head: vertices further than this from "
                                        "every landmark vertex do not move (mm)", gt=0)
    dense: bool = param("fit MediaPipe's 468 face mesh points beside dlib's 68 (fitting.dense, one fit per view, "
                        "no colour refinement); false = dlib's 68 alone (the landmark fit)")
    point_group_weights: list[float] = param("dense: weight of each point group in the fit: the mesh's oval, brows, "
                                             "eyes (both), nose, lips, rest, then dlib's 68", ge=0)
    point_spread_mm: float = param("dense: a mesh point that slides this far over the template's renders (its "
                                   "correspondence spread) counts half", gt=0)
    person_mask: bool = param("texels whose pixel shows the background or another face are not visible (MediaPipe's "
                              "selfie segmentation around the face, the other faces' boxes)")
    person_threshold: float = param("person mask: the selfie model's probability above which a pixel is the "
                                    "person", ge=0, le=1)


@dataclass
class LandmarkLoss:
    """How the fit weighs its 68 landmark errors: a robust loss by iteratively reweighted least squares, and a
    weight per landmark group (a detector's jaw and brows err more than its eyes)."""

    kind: str  # l2 | huber | cauchy
    scale: float  # errors beyond this share of the detections' eye-corner distance count less (huber, cauchy)
    group_weights: tuple[float, ...]  # per LANDMARK_GROUPS entry (jaw, brows, nose, eyes, mouth)

    def __post_init__(self) -> None:
        if self.kind not in LANDMARK_LOSSES:
            raise ValueError(f"landmark loss must be one of {LANDMARK_LOSSES}, not {self.kind!r}")
        if len(self.group_weights) != len(LANDMARK_GROUPS):
            raise ValueError(f"one weight per landmark group ({', '.join(LANDMARK_GROUPS)}), "
                             f"not {len(self.group_weights)}")

    def prior(self) -> np.ndarray:
        """The 68 per-landmark weights of the groups."""
        weights = np.ones(68)
        for group, weight in zip(LANDMARK_GROUPS.values(), self.group_weights):
            weights[group] = weight
        return weights

    def robust(self, errors_px: np.ndarray, inter_ocular_px: float) -> np.ndarray:
        """IRLS weights (0-1) of the loss for landmark errors (pixels, any shape)."""
        if self.kind == "l2" or self.scale <= 0:
            return np.ones_like(errors_px, dtype=np.float64)
        ratio = np.asarray(errors_px, dtype=np.float64) / max(self.scale * inter_ocular_px, 1e-12)
        if self.kind == "huber":
            return np.where(ratio <= 1.0, 1.0, 1.0 / np.maximum(ratio, 1e-12))
        return 1.0 / (1.0 + ratio ** 2)


L2_LOSS = LandmarkLoss("l2", 0.0, (1.0,) * len(LANDMARK_GROUPS))  # plain least squares: every landmark alike


@dataclass
class Fit:
    """A fitted weak-perspective camera and shape for one image."""

    rotation: np.ndarray  # 3,3 head frame -> camera
    scale: float  # pixels per millimetre
    translation: np.ndarray  # 2, screen pixels
    shape: np.ndarray  # K shape coefficients (units of one standard deviation)
    residual: float = 0.0  # RMS landmark distance in pixels (weighted landmarks), before any correction
    landmark_ids: np.ndarray | None = None  # 68 vertex ids the landmarks were matched to (jaw: the outline)
    landmark_weights: np.ndarray | None = None  # 68 weights the fit gave them (contour `drop`: 0 far-side jaw)
    offsets: np.ndarray | None = None  # V,3 mm (head frame): the non-rigid correction of every vertex; None = none
    point_weights: np.ndarray | None = None  # dense fit (fitting.dense): the weight it gave each mesh point

    def vertices(self, template: Template) -> np.ndarray:
        """The fitted mesh in the head frame (mm, float32): the shaped template plus the correction."""
        shaped = template.shaped(self.shape)
        return shaped if self.offsets is None else (shaped + self.offsets).astype(np.float32)

    @property
    def pose(self) -> np.ndarray:
        """yaw, pitch, roll in degrees (headtex.geometry.camera conventions)."""
        return np.array(euler_degrees(self.rotation))


@dataclass
class JawRegion:
    """Vertices of the cheeks and jaw where the face's outline (dlib's contour landmarks) can lie."""

    vertices: np.ndarray  # C vertex ids
    normals: np.ndarray  # C,3 unit normals of the template there


def jaw_region(template: Template) -> JawRegion:
    """The lower, lateral face: between the top jaw landmarks and just below the chin, no further round
    the head than the jaw landmarks (the ears and the back of the head never make dlib's contour)."""
    vertices = template.vertices.astype(np.float64)
    jaw = template.landmark_ids[JAW]
    angle = np.arctan2(vertices[:, 0], vertices[:, 2] - template.layout.axis_depth(vertices[:, 1]))
    inside = (
        (vertices[:, 1] < vertices[jaw, 1].max() + 5.0)
        & (vertices[:, 1] > vertices[jaw, 1].min() - 25.0)
        & (np.abs(angle) <= np.abs(angle[jaw]).max() + np.radians(5.0))
    )
    ids = np.flatnonzero(inside)
    return JawRegion(ids, vertex_normals(vertices, template.faces)[ids])


INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # (upper, lower) inner-lip landmarks, ibug order


def fitting_ids(template: Template) -> np.ndarray:
    """The template's 68 landmark vertex ids, made distinct: the template's mouth is closed, so an upper and a
    lower inner-lip landmark may share a vertex, and no fit could then follow an open mouth. The upper one
    takes the nearest vertex above it, the lower one the nearest below (~1-2 mm away on the scan)."""
    ids = template.landmark_ids.astype(np.int64).copy()
    vertices = template.vertices.astype(np.float64)
    for upper, lower in INNER_LIP_PAIRS:
        if ids[upper] != ids[lower]:
            continue
        offset = vertices - vertices[ids[upper]]
        distance = np.linalg.norm(offset, axis=1)
        for landmark, sign in ((upper, 1.0), (lower, -1.0)):
            ids[landmark] = int(np.argmin(np.where(sign * offset[:, 1] > 0.5, distance, np.inf)))
    return ids


def _shaped(template: Template, ids: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Positions (mm, float64) of some vertices of the template deformed by shape coefficients."""
    return template.vertices[ids].astype(np.float64) + np.tensordot(shape, template.basis[:, ids], axes=1)


def scaled_orthographic(points_3d: np.ndarray, points_2d: np.ndarray, weights: np.ndarray
                        ) -> tuple[np.ndarray, float, np.ndarray]:
    """Rotation, scale and 2D offset minimising sum w |q - s R[:2] X - b|^2 (q in y-up image coordinates).

    A linear affine camera first, projected onto the nearest scaled rotation (SVD);
    then orthographic Procrustes steps that complete each point's depth from the
    current estimate (each step never increases the 2D error).
    """
    w = weights / weights.sum()
    centre_3d, centre_2d = w @ points_3d, w @ points_2d
    x, q = points_3d - centre_3d, points_2d - centre_2d
    root = np.sqrt(w)[:, None]
    affine = np.linalg.lstsq(root * x, root * q, rcond=None)[0].T  # 2,3
    u, singular, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])
    scale = float(singular.mean())
    weighted_x = w[:, None] * x
    for _ in range(PROCRUSTES_REFINEMENTS):
        target = np.column_stack([q, scale * x @ rotation[2]])
        u, singular, vt = np.linalg.svd(target.T @ weighted_x)
        flip = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        rotation = (u * flip) @ vt
        scale = float((singular * flip).sum() / np.sum(weighted_x * x))
    return rotation, scale, centre_2d - scale * rotation[:2] @ centre_3d


def fit_landmarks(
    template: Template,
    landmarks_2d: np.ndarray,
    shape_regularisation: float,
    iterations: int,
    contour: str,
    jaw: JawRegion | None,
    correction: bool,
    correction_threshold: float,
    correction_radius_mm: float,
) -> Fit:
    """Fit pose and shape coefficients of the template to 68 image landmarks (pixels, ibug order).

    shape_regularisation is the Tikhonov weight on the coefficients (units of one
    standard deviation) against the landmark error in mm^2: the landmark noise
    variance in mm^2 under a unit-normal prior on the coefficients.
    jaw: the jaw region for contour `silhouette` (None = made here).
    correction: then move the mesh smoothly (landmark_correction) so that each matched landmark
    vertex lands within correction_threshold x the eye-corner distance of its detection.
    """
    return fit_views(template, [landmarks_2d], shape_regularisation, iterations, contour, jaw, correction,
                     correction_threshold, correction_radius_mm)[0]


def fit_views(
    template: Template,
    landmarks: list[np.ndarray],
    shape_regularisation: float,
    iterations: int,
    contour: str,
    jaw: JawRegion | None,
    correction: bool,
    correction_threshold: float,
    correction_radius_mm: float,
    loss: LandmarkLoss = L2_LOSS,
) -> list[Fit]:
    """Fit one shape and a pose per view to several images of one head (68 landmarks each, pixels).

    Each alternation fits every view's pose (and jaw contour) given the shape, then the shape by one
    regularised least-squares problem over all views' landmarks: a yaw sweep sees the head's width and depth
    from several sides, which one view's landmarks cannot tell from the camera's scale. One view = fit_landmarks.
    The non-rigid correction, when on, is per view (it follows each photo's own detections).
    loss: the landmark errors' weighting (group weights, a robust loss re-weighted every alternation from
    the errors at the current pose and shape); Fit.landmark_weights are the final weights.
    The prior counts once per view (shape_regularisation x views): with it counted once, 11 views' landmarks
    pull the shape far from the mean along what landmarks cannot see (measured: shape RMS error 1.61 vs 1.07
    for single views, PAF PSNR -0.1 dB; per view: 0.99 and +0.06 dB).
    """
    if contour not in CONTOUR_MODES:
        raise ValueError(f"contour must be one of {CONTOUR_MODES}, not {contour!r}")
    if not landmarks:
        return []  # no view with a face: nothing to fit (and no system to solve)
    if contour == "silhouette" and jaw is None:
        jaw = jaw_region(template)
    views = [np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0]) for points in landmarks]  # y up
    shape = np.zeros(template.basis.shape[0])
    annotated = template.landmark_ids.astype(np.int64)
    ids = [annotated.copy() for _ in views]
    weights = [np.ones(len(annotated)) for _ in views]  # the contour's (`drop`: 0 on the far-side jaw)
    prior = loss.prior()
    robust = [np.ones(len(annotated)) for _ in views]
    inter_ocular = [float(np.linalg.norm(q[OUTER_EYE_CORNERS[0]] - q[OUTER_EYE_CORNERS[1]])) for q in views]
    jaw_x = template.vertices[annotated[JAW], 0]
    side = np.where(np.abs(jaw_x) > 10.0, np.sign(jaw_x), 0.0)  # the chin (|x| < 10 mm) belongs to both sides
    cameras = []
    for _ in range(iterations):
        cameras = []
        for v, (q, view_ids, view_weights) in enumerate(zip(views, ids, weights)):
            rotation, scale, offset = scaled_orthographic(_shaped(template, view_ids, shape), q,
                                                          view_weights * prior * robust[v])
            yaw = np.degrees(np.arctan2(-rotation[2, 0], rotation[2, 2]))
            far = (side == np.sign(yaw)) & (abs(yaw) > FAR_SIDE_YAW_DEGREES)
            outline = (jaw.vertices[np.abs(jaw.normals @ rotation[2]) < SILHOUETTE_COSINE]
                       if contour == "silhouette" else np.empty(0, dtype=np.int64))
            if len(outline):
                # Nearest projected silhouette vertex (normal across the view) for the far side and the chin.
                projected = scale * _shaped(template, outline, shape) @ rotation[:2].T + offset
                distance = np.linalg.norm(projected[None] - q[JAW, None], axis=2)  # 17,C
                nearest = distance.argmin(1)
                use = (far | (side == 0)) & (distance[JAW, nearest] < SILHOUETTE_REACH_MM * scale)
                view_ids[JAW] = np.where(use, outline[nearest], annotated[JAW])
            elif contour == "drop":
                view_weights[JAW] = np.where(far, 0.0, 1.0)
            camera = scaled_orthographic(_shaped(template, view_ids, shape), q, view_weights * prior * robust[v])
            cameras.append(camera)
            if loss.kind != "l2":
                predicted = camera[1] * _shaped(template, view_ids, shape) @ camera[0][:2].T + camera[2]
                robust[v] = loss.robust(np.linalg.norm(predicted - q, axis=1), inter_ocular[v])
        combined = [view_weights * prior * view_robust for view_weights, view_robust in zip(weights, robust)]
        shape = _fit_shape_views(template, ids, views, combined, cameras, shape_regularisation)
    fits = []
    for q, view_ids, view_weights, (rotation, scale, offset) in zip(views, ids, combined, cameras):
        points = _shaped(template, view_ids, shape)
        predicted = scale * points @ rotation[:2].T + offset
        residual = float(np.sqrt(np.average(np.sum((predicted - q) ** 2, axis=1), weights=view_weights)))
        # The inner lips' shared vertex split in two (fitting_ids), for the correction and the matched landmarks.
        matched = np.where(view_ids == annotated, fitting_ids(template), view_ids)
        fit = Fit(rotation=rotation, scale=scale, translation=offset * np.array([1.0, -1.0]), shape=shape.copy(),
                  residual=residual, landmark_ids=matched, landmark_weights=view_weights.copy())
        if correction:
            fit = corrected(template, fit, q * np.array([1.0, -1.0]), correction_threshold, correction_radius_mm)
        fits.append(fit)
    return fits


def _fit_shape_views(template: Template, ids: list[np.ndarray], views: list[np.ndarray], weights: list[np.ndarray],
                     cameras: list[tuple[np.ndarray, float, np.ndarray]], regularisation: float) -> np.ndarray:
    """Tikhonov-regularised least squares for one set of shape coefficients over every view (errors in mm)."""
    count = template.basis.shape[0]
    normal, right = len(views) * regularisation * np.eye(count), np.zeros(count)
    for view_ids, q, view_weights, (rotation, scale, offset) in zip(ids, views, weights, cameras):
        basis = template.basis[:, view_ids].astype(np.float64)  # K,68,3
        residual = (q - offset) / scale - template.vertices[view_ids].astype(np.float64) @ rotation[:2].T  # 68,2 mm
        design = (basis @ rotation[:2].T).reshape(count, -1).T  # 136,K
        w = np.repeat(view_weights, 2)
        normal += design.T @ (w[:, None] * design)
        right += design.T @ (w * residual.ravel())
    return np.linalg.solve(normal, right)


def corrected(template: Template, fit: Fit, landmarks_2d: np.ndarray, threshold: float, radius_mm: float) -> Fit:
    """The fit with the non-rigid landmark correction (landmark_correction) towards 68 detections (pixels):
    each matched landmark vertex ends within threshold x the eye-corner distance of its detection."""
    q = np.asarray(landmarks_2d, dtype=np.float64) * np.array([1.0, -1.0])  # y up
    matched = fit.landmark_ids if fit.landmark_ids is not None else fitting_ids(template)
    weights = fit.landmark_weights if fit.landmark_weights is not None else np.ones(len(matched))
    points = _shaped(template, matched, fit.shape)
    offset = fit.translation * np.array([1.0, -1.0])
    predicted = fit.scale * points @ fit.rotation[:2].T + offset
    inter_ocular = float(np.linalg.norm(q[OUTER_EYE_CORNERS[0]] - q[OUTER_EYE_CORNERS[1]]))
    offsets = landmark_correction(template, fit, points, q - predicted, weights, threshold * inter_ocular, radius_mm)
    return dataclasses.replace(fit, offsets=offsets)


CORRECTION_RIDGE = 1e-5  # ridge on the Gaussian kernel matrix: conditioning only, the fields interpolate (to ~0.02 px)


def landmark_correction(template: Template, fit: Fit, points: np.ndarray, residual: np.ndarray, weights: np.ndarray,
                        noise_px: float, radius_mm: float) -> np.ndarray:
    """A smooth displacement of every vertex (V,3 mm, head frame) that moves the matched landmark vertices
    toward the detections, in the image plane.

    Per landmark, the part of its 2D residual (y up) beyond `noise_px` (soft threshold: a residual the
    size of the detector's noise moves nothing, a larger one moves the vertex to within noise_px of the
    detection); these are interpolated over the head by Gaussian radial basis functions centred on the
    landmark vertices (3D distance on the shaped head; Wendland's compactly supported function of radius
    radius_mm), so vertices further than radius_mm from every landmark never move. The
    displacement lies in the camera's image plane (no depth), in mm.
    """
    length = np.linalg.norm(residual, axis=1, keepdims=True)
    excess = residual * np.clip(1.0 - noise_px / np.maximum(length, 1e-12), 0.0, None) * (weights > 0)[:, None]
    vertices = template.shaped(fit.shape).astype(np.float64)
    if not np.any(excess):
        return np.zeros_like(vertices, dtype=np.float32)
    field = wendland_field(vertices, points, excess, radius_mm, CORRECTION_RIDGE)  # V,2 px
    return (field / fit.scale @ fit.rotation[:2]).astype(np.float32)  # image plane (y up), px -> mm, head frame


def fitted_landmarks(template: Template, fit: Fit, matched: bool = False) -> np.ndarray:
    """The fitted mesh's 68 landmark vertices projected with the fit, pixels (68, 2): the template's annotated
    vertices, or (matched) those the fit matched the landmarks to (far-side jaw: the face's outline, as the
    ibug convention annotates it)."""
    ids = fit.landmark_ids if matched and fit.landmark_ids is not None else template.landmark_ids
    return project(fit.vertices(template)[ids], fit.rotation, fit.scale, fit.translation)[:, :2]


def landmark_nme(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point error / inter-ocular distance (outer eye corners of the truth), per image (..., 68, 2)."""
    inter_ocular = np.linalg.norm(truth[..., OUTER_EYE_CORNERS[0], :] - truth[..., OUTER_EYE_CORNERS[1], :], axis=-1)
    return np.linalg.norm(predicted - truth, axis=-1).mean(-1) / inter_ocular



# The fit of a generated face (faces' generated and stylegan sources, the stylegan stage's yaw samples): pafs'
# params.yaml values, fixed here because those stages do not read pafs' section; no correction (shape only).
PLAIN_FIT = dict(shape_regularisation=40.0, iterations=5, contour="silhouette", jaw=None, correction=False,
                 correction_threshold=0.3, correction_radius_mm=30.0)


def image_fit(template: Template, image: np.ndarray, **overrides: object) -> tuple[Fit, np.ndarray] | None:
    """(PLAIN_FIT of the template, some of its values overridden; dlib's 68 landmarks) for the face in an image
    (HOG, then HOG upsampled); None: no face."""
    from headtex.detection import find_face

    found = find_face(image, [("hog", 0), ("hog", 1)])
    if found is None:
        return None
    return fit_landmarks(template, found.landmarks, **{**PLAIN_FIT, **overrides}), found.landmarks
