"""PAF core: one image -> the chosen face's 68 landmarks -> template fit -> partial UV texture + visibility.

The fitting itself lives in headtex.fitting (shared with reconstruct). Arrays in, arrays out: no I/O.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from headtex.detection import Detection, find_face
from headtex.facemesh import person_mask
from headtex.fitting import (
    LANDMARK_GROUPS, LANDMARK_LOSSES, POINT_GROUPS, DenseAssets, Fit, FitParams, JawRegion, LandmarkLoss, TexelGrid,
    corrected, corrected_dense, dense_targets, fit_dense, fit_dense_views, fit_views, partial_texture, point_weights,
    refine_views, texel_grid,
)
from headtex.geometry.template import Template
from headtex.params import param


@dataclass
class PafsParams(FitParams):
    """The `pafs:` section of params.yaml: the fitting keys plus the stage's own."""

    upsample: int = param("times the detector upsamples the image (finds smaller faces, ~4x the cost per step)", ge=0)
    joint_fit: bool = param("fit one shape to all views of an identity (a pose per view); false = each view alone")
    photometric_iterations: list[int] = param("joint fit: Gauss-Newton steps of the multi-view colour refinement "
                                              "(headtex.fitting.photometric) per level, coarse to fine; all 0 = "
                                              "landmarks only", ge=0)
    photometric_blur_px: list[float] = param("joint fit: Gaussian blur of the views per refinement level (pixels)",
                                             ge=0)
    photometric_weight: float = param("joint fit: weight of the views' colour agreement against their landmarks "
                                      "(1 = a view's texels weigh as much as its 68 landmarks)", ge=0)
    photometric_texel_strides: list[int] = param("joint fit: per refinement level, the texels compared: every n-th "
                                                 "in u and v", ge=1)
    photometric_max_view_angle_degrees: float = param("joint fit: texels seen more obliquely than this take no "
                                                      "part in the refinement", gt=0, le=90)
    landmark_loss: str = param("the fit's loss on the landmark errors: l2 | huber | cauchy (robust, by iteratively "
                               "reweighted least squares: dlib's errors on a face are heavy-tailed)",
                               choices=LANDMARK_LOSSES)
    landmark_loss_scale: float = param("huber / cauchy: landmark errors beyond this share of the detections' "
                                       "eye-corner distance count less", ge=0)
    landmark_group_weights: list[float] = param("weight of each landmark group's errors in the fit: "
                                                + ", ".join(LANDMARK_GROUPS), ge=0)
    workers: int = param("processes; 0 = all cores (`headtex pafs --workers N` overrides)", ge=0)
    shard_size: int = param("views per shard (whole identities)", ge=1)
    preview_identities: int = param("identities drawn in data/pafs/preview/", ge=0)
    uv_size: int = param("texture side in texels", shared="uv.size")

    def __post_init__(self) -> None:
        landmark_loss(self)  # one group weight per landmark group (a ValueError: params reports it in one line)
        levels = (len(self.photometric_iterations), len(self.photometric_blur_px), len(self.photometric_texel_strides))
        if len(set(levels)) != 1:
            raise ValueError("photometric_iterations, photometric_blur_px and photometric_texel_strides: one entry per "
                             f"refinement level each, not {levels[0]}, {levels[1]} and {levels[2]}")

    @property
    def refines(self) -> bool:
        """Whether the joint fit is refined by the views' colour agreement."""
        return self.joint_fit and sum(self.photometric_iterations) > 0


@dataclass
class ViewResult:
    """Everything the stage keeps of one photograph."""

    landmarks: np.ndarray  # 68,2 float32 detected landmarks (pixels)
    fit: Fit
    paf: np.ndarray  # U,U,3 uint8, 0 where not visible
    visible: np.ndarray  # U,U uint8, 255 = visible
    view_cosine: np.ndarray  # U,U uint8, cos(view angle) * 255, 0 where not visible
    detector: str  # the detector that found the face


def _detect(image: np.ndarray, params: PafsParams):
    attempts = [(params.detector, params.upsample)]
    if params.fallback_detector:
        attempts.append((params.fallback_detector, params.fallback_upsample))
    return find_face(image, attempts)


def _sample(image: np.ndarray, template: Template, params: PafsParams, detection: Detection, fit: Fit,
            dense: DenseAssets | None) -> ViewResult:
    person = (person_mask(image, detection.box, list(detection.others), dense.mesh.segmentation_model,
                          params.person_threshold) if params.person_mask else None)
    paf, visible, cosine = partial_texture(image, template, fit, params.max_view_angle_degrees,
                                           params.depth_tolerance_mm, person)
    return ViewResult(detection.landmarks.astype(np.float32), fit, paf, visible, cosine, detection.detector)


def refinement_grids(template: Template, params: PafsParams) -> list[TexelGrid]:
    """The colour refinement's texels, one grid per level (params.photometric_texel_strides)."""
    return [texel_grid(template, stride) for stride in params.photometric_texel_strides]


def _refined(template: Template, params: PafsParams, fits: list[Fit], images: list[np.ndarray],
             landmarks: list[np.ndarray], grids: list[TexelGrid] | None) -> list[Fit]:
    """A joint fit refined by the views' colour agreement (fitting.photometric), when params.refines."""
    if not params.refines:
        return fits
    return refine_views(images, template, fits, landmarks,
                        grids if grids is not None else refinement_grids(template, params), params.photometric_blur_px,
                        params.photometric_iterations, params.photometric_weight, params.shape_regularisation,
                        params.photometric_max_view_angle_degrees, params.depth_tolerance_mm)


def landmark_loss(params: PafsParams) -> LandmarkLoss:
    """The stage's landmark loss (params.landmark_*)."""
    return LandmarkLoss(params.landmark_loss, params.landmark_loss_scale, tuple(params.landmark_group_weights))


def _fit_dense(template: Template, params: PafsParams, dense: DenseAssets, detections: list[Detection],
               images: list[np.ndarray], joint: bool, grids: list[TexelGrid] | None) -> list[Fit]:
    """Dense fits for one identity's views (fitting.dense): the face mesh run in each view's dlib face, its 468 points
    and dlib's 68 fitted with params.point_group_weights, each view alone or one shape for all (then refined by the
    views' colour agreement, as the landmark fit, when photometric_iterations > 0); then the correction towards
    dlib's 68, when on."""
    targets = [dense_targets(image, detection.landmarks, dense) for image, detection in zip(images, detections)]
    weights = [point_weights(dense.points, _group_weights(params, detection), params.point_spread_mm)
               for detection in detections]
    arguments = (params.shape_regularisation, params.fit_iterations, params.contour == "silhouette")
    if joint:
        fits = fit_dense_views(template, dense.points, targets, weights, *arguments)
        fits = _refined(template, params, fits, images, [d.landmarks for d in detections], grids)
    else:
        fits = [fit_dense(template, dense.points, points, view_weights, *arguments)
                for points, view_weights in zip(targets, weights)]
    if params.correction:  # towards dlib's 68, where they have weight (corrected_dense)
        fits = [corrected_dense(template, dense.points, fit, points, params.correction_threshold,
                                params.correction_radius_mm) for fit, points in zip(fits, targets)]
    return fits


def _group_weights(params: PafsParams, detection: Detection) -> list[float]:
    """The point group weights for one face: params.point_group_weights, with dlib's 68 weighted 0 on a face only the
    fallback detector found. dlib's predictor misplaces the landmarks of the turned faces HOG misses (identities
    0-63 at yaw +-50: fitted NME 0.06-0.98), while the mesh, run in the region they imply and then in its own,
    recovers (identity 12 at yaw -50: NME 0.489 with the landmark fit, 0.098 dense with dlib's 68, 0.078 without)."""
    weights = list(params.point_group_weights)
    if detection.detector != params.detector:
        weights[POINT_GROUPS.index("dlib")] = 0.0
    return weights


def _fit(template: Template, params: PafsParams, jaw: JawRegion | None, landmarks: list[np.ndarray],
         joint: bool, images: list[np.ndarray], grids: list[TexelGrid] | None) -> list[Fit]:
    """Fits for one identity's views: each alone, or jointly (one shape) refined by the views' colour agreement;
    the non-rigid correction, when on, last (it follows each view's own detections)."""
    arguments = (params.shape_regularisation, params.fit_iterations, params.contour, jaw)
    loss = landmark_loss(params)
    if not joint:
        return [fit_views(template, [points], *arguments, params.correction, params.correction_threshold,
                          params.correction_radius_mm, loss)[0] for points in landmarks]
    fits = fit_views(template, landmarks, *arguments, False, params.correction_threshold,
                     params.correction_radius_mm, loss)
    fits = _refined(template, params, fits, images, landmarks, grids)
    if params.correction:
        fits = [corrected(template, fit, points, params.correction_threshold, params.correction_radius_mm)
                for fit, points in zip(fits, landmarks)]
    return fits


def process_views(images: np.ndarray, template: Template, params: PafsParams, jaw: JawRegion | None = None,
                  grids: list[TexelGrid] | None = None, dense: DenseAssets | None = None) -> list[ViewResult | None]:
    """All views of one identity: per view the result, None = no face. One fit per view: each alone, or (joint_fit)
    one shape for the views with a face (an identity with a missing view is discarded anyway). grids: the colour
    refinement's texels per level (refinement_grids; None = made here). dense: the mesh
    correspondence and models, needed for params.dense and params.person_mask."""
    if (params.dense or params.person_mask) and dense is None:
        raise ValueError("pafs.dense and pafs.person_mask need the face mesh assets (DenseAssets)")
    detections = [_detect(image, params) for image in images]
    found = [index for index, detection in enumerate(detections) if detection is not None]
    results: list[ViewResult | None] = [None] * len(images)
    faces = [images[index] for index in found]
    if params.dense:
        fits = _fit_dense(template, params, dense, [detections[index] for index in found], faces, params.joint_fit,
                          grids)
    else:
        fits = _fit(template, params, jaw, [detections[index].landmarks for index in found], params.joint_fit,
                    faces, grids)
    for index, fit in zip(found, fits):
        results[index] = _sample(images[index], template, params, detections[index], fit, dense)
    return results


def process_image(image: np.ndarray, template: Template, params: PafsParams, jaw: JawRegion | None = None,
                  dense: DenseAssets | None = None) -> ViewResult | None:
    """Choose the face, fit the template to its landmarks and extract the PAF; None = no face.

    The fallback detector runs only where the first finds nothing: dlib's HOG detector is
    fast but frontal (it misses ~2 % of views at |yaw| 45-50 deg), the mmod CNN finds them at
    ~15x its cost, so as a fallback it costs little.
    """
    single = dataclasses.replace(params, joint_fit=False)
    return process_views(image[None], template, single, jaw, None, dense)[0]
