"""PAF core: one image -> 68 landmarks -> template fit (pose + shape) -> partial UV texture + visibility.

Camera: weak perspective (scaled orthographic), as in headtex.geometry.project:
screen x = s (R X)_x + t_x, screen y = -s (R X)_y + t_y, screen depth = s (R X)_z.
Fitting follows eos (Huber et al. 2016): alternate (a) the pose from 2D-3D landmark
correspondences (affine camera, nearest scaled rotation, orthographic Procrustes),
(b) the shape coefficients by Tikhonov-regularised linear least squares given the
pose, (c) re-matching of the jaw-contour landmarks to the silhouette of the face.
Arrays in, arrays out: no I/O, no globals.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headtex.detect import largest_face
from headtex.geometry import (
    depth_map, euler_degrees, project, sample_texture, vertex_normals, view_direction, visible_points,
)
from headtex.io import UserError
from headtex.template.core import Template

DETECTORS = ("hog", "cnn")
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


@dataclass
class PafsParams:
    """The `pafs:` section of params.yaml (uv_size is the shared `uv.size`)."""

    detector: str = "hog"
    upsample: int = 1
    fallback_detector: str | None = "cnn"
    fallback_upsample: int = 0
    shape_regularisation: float = 20.0
    fit_iterations: int = 5
    contour: str = "silhouette"
    max_view_angle_degrees: float = 70.0
    depth_tolerance_mm: float = 3.0
    workers: int = 0
    shard_size: int = 1024
    preview_identities: int = 3
    uv_size: int = 192

    def __post_init__(self) -> None:
        problems = []
        if self.detector not in DETECTORS or self.fallback_detector not in DETECTORS + (None,):
            problems.append(f"detector must be 'hog' or 'cnn' (fallback_detector also null), not "
                            f"{self.detector!r} / {self.fallback_detector!r}")
        if self.contour not in CONTOUR_MODES:
            problems.append(f"contour must be one of {', '.join(CONTOUR_MODES)}, not {self.contour!r}")
        if not 0.0 < self.max_view_angle_degrees <= 90.0:
            problems.append("max_view_angle_degrees must lie in (0, 90]")
        if self.fit_iterations < 1 or self.shard_size < 1:
            problems.append("fit_iterations and shard_size must be >= 1")
        if min(self.upsample, self.fallback_upsample, self.shape_regularisation, self.depth_tolerance_mm) < 0:
            problems.append("upsample, shape_regularisation and depth_tolerance_mm must be >= 0")
        if problems:
            raise UserError(f"params.yaml [pafs]: {'; '.join(problems)}")


@dataclass
class Fit:
    """A fitted weak-perspective camera and shape for one image."""

    rotation: np.ndarray  # 3,3 head frame -> camera
    scale: float  # pixels per millimetre
    translation: np.ndarray  # 2, screen pixels
    shape: np.ndarray  # K shape coefficients (units of one standard deviation)
    residual: float = 0.0  # RMS landmark distance in pixels (weighted landmarks)

    @property
    def pose(self) -> np.ndarray:
        """yaw, pitch, roll in degrees (headtex.geometry.camera conventions)."""
        return np.array(euler_degrees(self.rotation))


@dataclass
class ViewResult:
    """Everything the stage keeps of one photograph."""

    landmarks: np.ndarray  # 68,2 float32 detected landmarks (pixels)
    fit: Fit
    paf: np.ndarray  # U,U,3 uint8, 0 where not visible
    visible: np.ndarray  # U,U uint8, 255 = visible
    view_cosine: np.ndarray  # U,U uint8, cos(view angle) * 255, 0 where not visible
    detector: str  # the detector that found the face


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


def _shaped(template: Template, ids: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Positions (mm, float64) of some vertices of the template deformed by shape coefficients."""
    return template.vertices[ids].astype(np.float64) + np.tensordot(shape, template.basis[:, ids], axes=1)


def scaled_orthographic(points_3d: np.ndarray, points_2d: np.ndarray, weights: np.ndarray,
                        refinements: int = 3) -> tuple[np.ndarray, float, np.ndarray]:
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
    for _ in range(refinements):
        target = np.column_stack([q, scale * x @ rotation[2]])
        u, singular, vt = np.linalg.svd(target.T @ weighted_x)
        flip = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        rotation = (u * flip) @ vt
        scale = float((singular * flip).sum() / np.sum(weighted_x * x))
    return rotation, scale, centre_2d - scale * rotation[:2] @ centre_3d


def _fit_shape(template: Template, ids: np.ndarray, q: np.ndarray, weights: np.ndarray, rotation: np.ndarray,
               scale: float, offset: np.ndarray, regularisation: float) -> np.ndarray:
    """Tikhonov-regularised linear least squares for the shape coefficients given the camera (errors in mm)."""
    basis = template.basis[:, ids].astype(np.float64)  # K,68,3
    residual = (q - offset) / scale - template.vertices[ids].astype(np.float64) @ rotation[:2].T  # 68,2 mm
    design = (basis @ rotation[:2].T).reshape(len(basis), -1).T  # 136,K
    w = np.repeat(weights, 2)
    normal = design.T @ (w[:, None] * design) + regularisation * np.eye(len(basis))
    return np.linalg.solve(normal, design.T @ (w * residual.ravel()))


def fit_landmarks(
    template: Template,
    landmarks_2d: np.ndarray,
    shape_regularisation: float = 20.0,
    iterations: int = 5,
    contour: str = "silhouette",
    jaw: JawRegion | None = None,
) -> Fit:
    """Fit pose and shape coefficients of the template to 68 image landmarks (pixels, ibug order).

    shape_regularisation is the Tikhonov weight on the coefficients (units of one
    standard deviation) against the landmark error in mm^2: the landmark noise
    variance in mm^2 under a unit-normal prior on the coefficients.
    """
    if contour not in CONTOUR_MODES:
        raise ValueError(f"contour must be one of {CONTOUR_MODES}, not {contour!r}")
    if contour == "silhouette" and jaw is None:
        jaw = jaw_region(template)
    q = np.asarray(landmarks_2d, dtype=np.float64) * np.array([1.0, -1.0])  # y up, like the head frame
    shape = np.zeros(template.basis.shape[0])
    annotated = template.landmark_ids.astype(np.int64)
    ids = annotated.copy()
    weights = np.ones(len(ids))
    jaw_x = template.vertices[annotated[JAW], 0]
    side = np.where(np.abs(jaw_x) > 10.0, np.sign(jaw_x), 0.0)  # the chin (|x| < 10 mm) belongs to both sides
    for _ in range(iterations):
        rotation, scale, offset = scaled_orthographic(_shaped(template, ids, shape), q, weights)
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
            ids[JAW] = np.where(use, outline[nearest], annotated[JAW])
        elif contour == "drop":
            weights[JAW] = np.where(far, 0.0, 1.0)
        rotation, scale, offset = scaled_orthographic(_shaped(template, ids, shape), q, weights)
        shape = _fit_shape(template, ids, q, weights, rotation, scale, offset, shape_regularisation)
    predicted = scale * _shaped(template, ids, shape) @ rotation[:2].T + offset
    residual = float(np.sqrt(np.average(np.sum((predicted - q) ** 2, axis=1), weights=weights)))
    return Fit(rotation=rotation, scale=scale, translation=offset * np.array([1.0, -1.0]), shape=shape,
               residual=residual)


def fitted_landmarks(template: Template, fit: Fit) -> np.ndarray:
    """The template's 68 annotated landmark vertices projected with the fit, pixels (68, 2)."""
    points = _shaped(template, template.landmark_ids, fit.shape)
    return project(points, fit.rotation, fit.scale, fit.translation)[:, :2]


def partial_texture(
    image: np.ndarray,
    template: Template,
    fit: Fit,
    max_view_angle_degrees: float = 70.0,
    depth_tolerance_mm: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the image into the template's UV layout through the fitted mesh.

    Per valid texel: its point on the fitted (shaped, posed) mesh, projected into the
    image; visible when it faces the camera within max_view_angle_degrees and no
    surface of the fitted mesh lies more than depth_tolerance_mm in front of it
    (z-buffer). Returns (paf U,U,3 uint8 with 0 where not visible, visible U,U uint8
    255/0, view_cosine U,U uint8 = cos(view angle) * 255, 0 where not visible).
    Occluded texels stay empty: nothing is interpolated.
    """
    height, width = image.shape[:2]
    vertices = template.shaped(fit.shape)
    screen = project(vertices, fit.rotation, fit.scale, fit.translation)
    depth = depth_map(screen, template.faces, height, width)
    rows, cols = np.nonzero(template.texel_triangle >= 0)
    corners = template.faces[template.texel_triangle[rows, cols]]  # N,3
    weights = template.texel_barycentrics[rows, cols].astype(np.float64)  # N,3
    # Screen position and normal per texel, interpolated in one pass (projection is affine, so
    # interpolating projected corners is exact).
    per_vertex = np.concatenate([screen, vertex_normals(vertices, template.faces)], axis=1)
    texel = sum(weights[:, k, None] * per_vertex[corners[:, k]] for k in range(3))
    points, normals = texel[:, :3], texel[:, 3:]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    towards_camera = view_direction(fit.rotation)
    seen = visible_points(points, normals, towards_camera, depth, depth_tolerance_mm * fit.scale,
                          max_view_angle_degrees)
    rows, cols, points, normals = rows[seen], cols[seen], points[seen], normals[seen]
    size = template.texel_triangle.shape
    paf = np.zeros(size + (3,), dtype=np.uint8)
    visible = np.zeros(size, dtype=np.uint8)
    cosine = np.zeros(size, dtype=np.uint8)
    # Bilinear lookup; pixel centres sit at integer coordinates, sample_texture takes [0, 1].
    paf[rows, cols] = sample_texture(image, (points[:, :2] + 0.5) / np.array([width, height]))
    visible[rows, cols] = 255
    cosine[rows, cols] = np.clip(np.rint(255.0 * (normals @ towards_camera)), 0, 255).astype(np.uint8)
    return paf, visible, cosine


def process_image(image: np.ndarray, template: Template, params: PafsParams,
                  jaw: JawRegion | None = None) -> ViewResult | None:
    """Detect the largest face, fit the template to its landmarks and extract the PAF; None = no face.

    The fallback detector runs only where the first finds nothing: dlib's HOG detector is
    fast but frontal (it misses ~2 % of views at |yaw| 45-50 deg), the mmod CNN finds them at
    ~15x its cost, so as a fallback it costs little.
    """
    detector = params.detector
    detection = largest_face(image, detector, params.upsample)
    if detection is None and params.fallback_detector:
        detector = params.fallback_detector
        detection = largest_face(image, detector, params.fallback_upsample)
    if detection is None:
        return None
    fit = fit_landmarks(template, detection.landmarks, params.shape_regularisation, params.fit_iterations,
                        params.contour, jaw)
    paf, visible, cosine = partial_texture(image, template, fit, params.max_view_angle_degrees,
                                           params.depth_tolerance_mm)
    return ViewResult(detection.landmarks.astype(np.float32), fit, paf, visible, cosine, detector)


def landmark_nme(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point error / inter-ocular distance (outer eye corners of the truth), per image (..., 68, 2)."""
    inter_ocular = np.linalg.norm(truth[..., OUTER_EYE_CORNERS[0], :] - truth[..., OUTER_EYE_CORNERS[1], :], axis=-1)
    return np.linalg.norm(predicted - truth, axis=-1).mean(-1) / inter_ocular

