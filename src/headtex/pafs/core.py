"""PAF core: one image -> the chosen face's 68 landmarks -> template fit -> partial UV texture + visibility.

The fitting itself lives in headtex.fitting (shared with reconstruct). Arrays in, arrays out: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headtex.detection import find_face
from headtex.fitting import (
    LANDMARK_GROUPS, LANDMARK_LOSSES, Fit, FitParams, JawRegion, LandmarkLoss, TexelGrid, corrected, fit_views,
    partial_texture, refine_views, texel_grid,
)
from headtex.geometry.template import Template
from headtex.params import param


@dataclass
class PafsParams(FitParams):
    """The `pafs:` section of params.yaml: the fitting keys plus the stage's own."""

    upsample: int = param("times the detector upsamples the image (finds smaller faces, ~4x the cost per step)", ge=0)
    joint_fit: bool = param("fit one shape to all views of an identity (a pose per view); false = each view alone "
                            "(metrics/pafs.json reports both)")
    photometric_iterations: int = param("joint fit: Gauss-Newton steps per blur level of the multi-view colour "
                                        "refinement (headtex.fitting.photometric); 0 = landmarks only", ge=0)
    photometric_blur_px: list[float] = param("joint fit: Gaussian blur of the views per refinement level, coarse "
                                             "to fine (pixels)", ge=0)
    photometric_weight: float = param("joint fit: weight of the views' colour agreement against their landmarks "
                                      "(1 = a view's texels weigh as much as its 68 landmarks)", ge=0)
    photometric_texel_stride: int = param("joint fit: the refinement compares every n-th texel in u and v", ge=1)
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


def _sample(image: np.ndarray, template: Template, params: PafsParams, detection, fit: Fit) -> ViewResult:
    paf, visible, cosine = partial_texture(image, template, fit, params.max_view_angle_degrees,
                                           params.depth_tolerance_mm)
    return ViewResult(detection.landmarks.astype(np.float32), fit, paf, visible, cosine, detection.detector)


def landmark_loss(params: PafsParams) -> LandmarkLoss:
    """The stage's landmark loss (params.landmark_*)."""
    return LandmarkLoss(params.landmark_loss, params.landmark_loss_scale, tuple(params.landmark_group_weights))


def _fit(template: Template, params: PafsParams, jaw: JawRegion | None, landmarks: list[np.ndarray],
         joint: bool, images: list[np.ndarray], grid: TexelGrid | None) -> list[Fit]:
    """Fits for one identity's views: each alone, or jointly (one shape) refined by the views' colour agreement;
    the non-rigid correction, when on, last (it follows each view's own detections)."""
    arguments = (params.shape_regularisation, params.fit_iterations, params.contour, jaw)
    loss = landmark_loss(params)
    if not joint:
        return [fit_views(template, [points], *arguments, params.correction, params.correction_threshold,
                          params.correction_radius_mm, loss)[0] for points in landmarks]
    fits = fit_views(template, landmarks, *arguments, False, params.correction_threshold,
                     params.correction_radius_mm, loss)
    if params.photometric_iterations > 0 and len(fits) > 1:
        grid = grid if grid is not None else texel_grid(template, params.photometric_texel_stride)
        fits = refine_views(images, template, fits, landmarks, grid, params.photometric_blur_px,
                            params.photometric_iterations, params.photometric_weight, params.shape_regularisation,
                            params.photometric_max_view_angle_degrees, params.depth_tolerance_mm)
    if params.correction:
        fits = [corrected(template, fit, points, params.correction_threshold, params.correction_radius_mm)
                for fit, points in zip(fits, landmarks)]
    return fits


def process_views(images: np.ndarray, template: Template, params: PafsParams, jaw: JawRegion | None = None,
                  compare: bool = False, grid: TexelGrid | None = None
                  ) -> tuple[list[ViewResult | None], list[ViewResult] | None]:
    """All views of one identity: (per view the result, None = no face; with `compare`, the results of the
    other fitting mode too: single-view fits when params.joint_fit, else joint). The joint fit takes the
    views with a face; an identity with a missing view is discarded anyway. grid: the refinement's texels
    (texel_grid at params.photometric_texel_stride; None = made here)."""
    detections = [_detect(image, params) for image in images]
    found = [index for index, detection in enumerate(detections) if detection is not None]
    landmarks = [detections[index].landmarks for index in found]
    results: list[ViewResult | None] = [None] * len(images)
    faces = [images[index] for index in found]
    for index, fit in zip(found, _fit(template, params, jaw, landmarks, params.joint_fit, faces, grid)):
        results[index] = _sample(images[index], template, params, detections[index], fit)
    other = None
    if compare and found:
        other = [_sample(images[index], template, params, detections[index], fit)
                 for index, fit in zip(found, _fit(template, params, jaw, landmarks, not params.joint_fit, faces, grid))]
    return results, other


def process_image(image: np.ndarray, template: Template, params: PafsParams,
                  jaw: JawRegion | None = None) -> ViewResult | None:
    """Choose the face, fit the template to its landmarks and extract the PAF; None = no face.

    The fallback detector runs only where the first finds nothing: dlib's HOG detector is
    fast but frontal (it misses ~2 % of views at |yaw| 45-50 deg), the mmod CNN finds them at
    ~15x its cost, so as a fallback it costs little.
    """
    detection = _detect(image, params)
    if detection is None:
        return None
    return _sample(image, template, params, detection, _fit(template, params, jaw, [detection.landmarks], False, [image], None)[0])
