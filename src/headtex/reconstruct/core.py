"""Reconstruct core (thesis 3.5): one photo -> face + 68 landmarks -> template fit -> partial UV texture
(invisible texels masked, not interpolated) -> the inpainting model's completed texture.

Large photos: the face is detected on a copy downscaled to `detect_max_side`; its landmarks are mapped
back to the photo's pixels and the template is fitted there, so the fit (scale, translation) is in the
photo's own coordinates. The texture is sampled from the photo itself: a crop around the projected
head, area-averaged down to `sample_max_side` only when the head is larger than that (a 192-texel
texture cannot hold more, and averaging each texel's footprint beats point-sampling a 20000 px photo,
which would alias). Arrays in, arrays out: no files, no printing.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import dlib
import numpy as np
import torch

from headtex.detection import (
    SAME_FACE_IOU, Detection, box_side, detection_attempts, faces_found, find_oriented_face, iou, landmark_problem,
    merge_faces, refined_landmarks, turned,
)
from headtex.facemesh import person_mask
from headtex.fitting import (
    DenseAssets, Fit, FitParams, JawRegion, corrected_dense, dense_targets, fit_dense, fit_landmarks,
    fitted_landmarks, photo_partial_texture, point_weights, scaled_fit,
)
from headtex.geometry import project, render_textured
from headtex.geometry.template import Template, render_view
from headtex.inpaint import Generator
from headtex.inpaint.complete import complete_texture
from headtex.metrics import region_psnr
from headtex.params import param
from headtex.photos import downscaled

PREVIEW_SIDE_YAWS = (-50.0, 50.0)  # the preview also renders the head from both sides (the inpainted parts)
PREVIEW_BACKGROUND = (200, 200, 200)
LANDMARK_COLOUR = (40, 220, 40)
OUTLINE_COLOUR = (255, 210, 0)
WIREFRAME_COLOUR = (255, 255, 255)
WIREFRAME_OPACITY = 0.35


@dataclass
class ReconstructParams:
    """The `reconstruct:` section of params.yaml (detection, fitting and sampling come from `pafs:`)."""

    detect_max_side: int = param("detect on a copy downscaled to this longer side (px)", ge=64)
    upsample: int = param("detector upsampling on the first try (+1, then pafs.fallback_detector, when nothing "
                          "is found)", ge=0)
    sample_max_side: int = param("the texture is sampled from the head crop, area-averaged to at most this side",
                                 ge=64)
    overlay_max_side: int = param("overlay.png is at most this long (px)", ge=64)
    preview_size: int = param("tile size of preview.png", ge=64)
    correction_threshold: float = param("pafs.correction_threshold for photographs: residuals up to this share of "
                                        "the eye-corner distance are left alone", ge=0, le=1)
    dense: bool = param("pafs.dense for photographs: fit the face mesh's points beside dlib's 68 (false: dlib's 68, "
                        "which place the annotated real photos' landmarks better)")
    second_look_share: float = param("the CNN also looks (for a larger face HOG missed) when HOG's largest face is "
                                     "narrower than this share of the photo's shorter side ...", ge=0, le=1)
    second_look_confident_score: float = param("... unless that small face is frontal and HOG is this sure of it (SVM "
                                               "margin; the latency budget: the CNN costs ~1.5 s CPU) ...", ge=0)
    second_look_yaw_degrees: float = param("... or turned more than this", ge=0, le=90)
    second_look_max_pixels: int = param("... on a copy of at most this many pixels (it finds faces >= 80 px there; "
                                        "bounds the cost when it only confirms HOG) ...", ge=4096)
    second_look_face_px: int = param("... and it looks closer at each face found there that no HOG face explains, on "
                                     "a crop of the detection copy where that face's box is this wide ...", ge=20)
    second_look_crop_margin: float = param("... with this share of the box's side around it on each side (bounds "
                                           "the closer look's cost) ...", ge=0, le=4)
    second_look_refinements: int = param("... and places its landmarks again this many times in the box they "
                                         "imply (detection.refined_landmarks: a turned face's landmarks swing with "
                                         "the CNN's box)", ge=0)
    min_face_px: int = param("faces narrower than this (photo px) are too small to fit", ge=1)
    threads: int = param("torch CPU threads for the network (0 = one per core)", ge=0)
    uv_size: int = param("texture side in texels", shared="uv.size")


@dataclass
class Face:
    """The chosen face, in the photo's pixels."""

    landmarks: np.ndarray  # 68,2 float64 (x, y)
    box: tuple[float, float, float, float]  # left, top, right, bottom
    score: float  # HOG: SVM margin; CNN: mmod confidence
    detector: str
    upsample: int
    detect_factor: float  # photo pixels per pixel of the detection copy (1 = detected on the photo itself)
    detection_copy: np.ndarray  # the (turned) photo downscaled for detection (the photo itself when small enough)
    quarter_turns: int = 0  # counter-clockwise quarter turns that stand the face upright; landmarks and box are
    #                     in the turned photo's pixels (np.rot90(photo, quarter_turns))


class FaceRejected(ValueError):
    """A face was found but cannot be fitted (face_problem): nothing is written."""


@dataclass
class Reconstruction:
    face: Face
    image: np.ndarray  # the photo as fitted: turned upright by face.quarter_turns (the photo itself when 0)
    fit: Fit  # in the photo's pixels
    paf: np.ndarray  # U,U,3 uint8, 0 where not visible
    visible: np.ndarray  # U,U uint8, 255 = visible
    texture: np.ndarray  # U,U,3 uint8: the model's completion (known texels kept), off-head texels filled
    sample_box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the photo crop the texture was sampled from
    sample_factor: float  # photo pixels per pixel of that crop after area-averaging (1 = full resolution)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    fidelity: dict[str, float] = field(default_factory=dict)  # render_fidelity: truth-free checks


def to_original(points: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Pixel coordinates in an area-downscaled copy -> the original's (pixel centres at integers)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5


def _in_photo(detection: Detection, image: np.ndarray, small: np.ndarray, factor: float) -> Face:
    """A detection on the downscaled copy `small` (turned by detection.quarter_turns, like the detection), in the
    pixels of the photo turned the same way."""
    turns = detection.quarter_turns
    height, width = image.shape[:2] if turns % 2 == 0 else image.shape[1::-1]
    # Per axis: the copy's sides are rounded, so its x and y factors differ slightly.
    axis_factor = np.array([width / small.shape[1], height / small.shape[0]])
    landmarks = to_original(detection.landmarks, axis_factor)
    corners = to_original(np.reshape(detection.box, (2, 2)), axis_factor)
    return Face(landmarks, tuple(float(v) for v in corners.ravel()), detection.score, detection.detector,
                detection.upsample, factor, small, turns)


def find_faces(image: np.ndarray, config: ReconstructParams, fitting: FitParams, template: Template,
               jaw: JawRegion | None = None, timings: dict[str, float] | None = None) -> list[Face]:
    """Every face (headtex.detection.merge_faces' rule), most prominent (largest) first, in the photo's pixels.

    HOG on the detection copy (one more upsampling step when it finds nothing); when HOG finds no face, the one
    face is searched at every quarter turn (`detection.find_oriented_face`: a photo stored sideways, or a face
    only the CNN finds). The CNN (pafs.fallback_detector) also looks when HOG's largest face is turned (its fitted
    yaw), or small and scored below `second_look_confident_score`: HOG misses turned faces, so a larger face may be
    there. That second look (`_second_look`) searches a copy of at most `second_look_max_pixels` first.
    """
    timings = {} if timings is None else timings
    tick = time.perf_counter()
    small, factor = downscaled(image, config.detect_max_side)
    hog: list[Detection] = []
    for upsample in dict.fromkeys((config.upsample, config.upsample + 1)):
        hog = faces_found(small, fitting.detector, upsample)
        if hog:
            break
    if not hog or fitting.detector != "hog":
        # No upright face for HOG: the photo may be stored turned (no EXIF orientation), and the CNN also finds
        # faces lying on their side, so the one face is searched at every quarter turn, its orientation checked.
        attempts = detection_attempts(fitting.detector, config.upsample, fitting.fallback_detector,
                                      fitting.fallback_upsample)
        detection = find_oriented_face(small, attempts[:2], attempts[2:])
        timings["detection"] = time.perf_counter() - tick
        return [] if detection is None else [_in_photo(detection, image, turned(small, detection.quarter_turns),
                                                       factor)]
    second: list[Detection] = []
    if fitting.fallback_detector:
        best = merge_faces(hog, [])[0]
        # The pose only: no correction (it moves the mesh, not the camera).
        yaw = fit_landmarks(template, best.landmarks, fitting.shape_regularisation, fitting.fit_iterations,
                            fitting.contour, jaw, False, fitting.correction_threshold,
                            fitting.correction_radius_mm).pose[0]
        # Small and not a confident, frontal face, or turned: a larger face HOG missed may be there. A confident
        # frontal face (astronaut: margin 1.24) skips the CNN's ~1.5 s (a 1 MP photo in < 1 s on CPU-2); a
        # doubtful one (breakingbad's frontal face beside the larger turned one: 0.63; einstein: 0.07) does not.
        small_face = box_side(best.box) < config.second_look_share * min(small.shape[:2])
        turned_face = abs(yaw) > config.second_look_yaw_degrees
        if turned_face or (small_face and best.score < config.second_look_confident_score):
            second = _second_look(small, best, hog, config, fitting)
    faces = [_in_photo(d, image, small, factor) for d in merge_faces(hog, second)]
    timings["detection"] = time.perf_counter() - tick
    return faces


def _second_look(small: np.ndarray, best: Detection, hog: list[Detection], config: ReconstructParams,
                 fitting: FitParams) -> list[Detection]:
    """The CNN's faces on the detection copy `small`, looking for a face larger than HOG's `best`.

    The CNN's cost grows with the pixels it sees (~5 us each on CPU-2), so it searches a copy of at most
    `second_look_max_pixels`, where it finds faces of >= 80 px. Its boxes there are coarse, and dlib's landmarks
    on a turned face swing with the box (breakingbad's turned face: NME 57 % in the search box), so each face no
    HOG face explains (a face that will be reconstructed) is looked at again on a crop around it
    (`_closer_look`); the faces that only confirm HOG's keep the search box (merge_faces keeps HOG's).
    """
    search = max(1.0, float(np.sqrt(small.shape[0] * small.shape[1] / config.second_look_max_pixels)))
    copy, _ = downscaled(small, int(max(small.shape[:2]) / search))  # floor: within the budget
    found = [_scaled_detection(d, small, copy) for d in
             faces_found(copy, fitting.fallback_detector, fitting.fallback_upsample)]
    return [_closer_look(small, d, config, fitting) if all(iou(d.box, h.box) < SAME_FACE_IOU for h in hog)
            else _landmarks_on(small, d, 0) for d in found]


def _closer_look(small: np.ndarray, face: Detection, config: ReconstructParams, fitting: FitParams) -> Detection:
    """The CNN again on a crop of `small` around a face its search found, where that face's box is
    `second_look_face_px` wide, the landmarks refined in the box they imply; the search's face, its landmarks
    refined, when the crop shows none. Measured on breakingbad's turned face (docs/RESULTS.md): single crop boxes
    give NME 4-64 %, refined 3-6 %; the search box refined still 50-70 %, so both steps are needed."""
    side = box_side(face.box)
    scale = config.second_look_face_px / side  # crop pixels per pixel of small
    centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    half = (0.5 + config.second_look_crop_margin) * side
    x0, y0 = (int(max(0.0, v - half)) for v in centre)
    x1, y1 = int(min(small.shape[1], centre[0] + half)), int(min(small.shape[0], centre[1] + half))
    region = small[y0:y1, x0:x1]
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crop = cv2.resize(region, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    closer = faces_found(crop, fitting.fallback_detector, fitting.fallback_upsample)
    if closer:
        nearest = max(closer, key=lambda d: iou(_shifted(_scaled_detection(d, region, crop).box, x0, y0), face.box))
        moved = _scaled_detection(nearest, region, crop)
        face = Detection(_shifted(moved.box, x0, y0), moved.score, moved.landmarks + [x0, y0], moved.detector,
                         moved.upsample)
    return _landmarks_on(small, face, config.second_look_refinements)


def _shifted(box: tuple[float, float, float, float], x: float, y: float) -> tuple[float, float, float, float]:
    return box[0] + x, box[1] + y, box[2] + x, box[3] + y


def _scaled_detection(detection: Detection, target: np.ndarray, copy: np.ndarray) -> Detection:
    """A detection on `copy` in the pixels of `target`, of which copy is a downscaled copy."""
    axis_factor = np.array([target.shape[1] / copy.shape[1], target.shape[0] / copy.shape[0]])
    corners = to_original(np.reshape(detection.box, (2, 2)), axis_factor).ravel()
    return Detection(tuple(float(v) for v in corners), detection.score, to_original(detection.landmarks, axis_factor),
                     detection.detector, detection.upsample)


def _landmarks_on(image: np.ndarray, detection: Detection, refinements: int) -> Detection:
    """The detection with its 68 landmarks placed again on `image` (the detection copy its box is in), then
    `refinements` times in the box they imply (detection.refined_landmarks)."""
    rectangle = dlib.rectangle(*(int(round(v)) for v in detection.box))
    return Detection(detection.box, detection.score, refined_landmarks(image, rectangle, refinements),
                     detection.detector, detection.upsample)


def find_face(image: np.ndarray, config: ReconstructParams, fitting: FitParams, template: Template,
              jaw: JawRegion | None = None, timings: dict[str, float] | None = None) -> Face | None:
    """The most prominent face and its 68 landmarks, in the photo's pixels; None = no face."""
    faces = find_faces(image, config, fitting, template, jaw, timings)
    return faces[0] if faces else None


def face_problem(face: Face, image_shape: tuple[int, ...], config: ReconstructParams) -> str | None:
    """Why a found face cannot be fitted (one phrase), or None."""
    implausible = landmark_problem(face.landmarks)
    if implausible:
        return f"face found ({face.detector}) but rejected: {implausible}; nothing written"
    side = box_side(face.box)
    if side < config.min_face_px:
        return f"face too small to fit ({side:.0f} px wide, reconstruct.min_face_px is {config.min_face_px})"
    height, width = image_shape[:2] if face.quarter_turns % 2 == 0 else image_shape[1::-1][-2:]
    outside = ((face.landmarks[:, 0] < -EDGE_TOLERANCE_PX) | (face.landmarks[:, 0] > width - 1 + EDGE_TOLERANCE_PX)
               | (face.landmarks[:, 1] < -EDGE_TOLERANCE_PX) | (face.landmarks[:, 1] > height - 1 + EDGE_TOLERANCE_PX))
    if outside.any():
        return f"face cut off by the image edge ({int(outside.sum())} of 68 landmarks outside the photo)"
    return None


EDGE_TOLERANCE_PX = 1.0  # landmarks further than this outside the photo: the face is cut off


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch CPU threads (0 = leave as is), then restore the previous count.

    On the shared 2-core machine one thread inpaints a 192x192 texture in 0.23 s and two take 2.5 s when
    another process holds a core: OpenMP's barriers wait for the descheduled thread.
    """
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def reconstruct(image: np.ndarray, template: Template, jaw: JawRegion, generator: Generator, ship_output: str,
                config: ReconstructParams, pafs: FitParams, dense: DenseAssets | None = None) -> Reconstruction | None:
    """Photo (uint8 RGB, any size) -> the most prominent face, fit, partial and completed texture; None = no face.
    A face that cannot be fitted (`face_problem`: implausible landmarks, too small, cut off) raises FaceRejected."""
    timings: dict[str, float] = {}
    faces = find_faces(image, config, pafs, template, jaw, timings)
    if not faces:
        return None
    problem = face_problem(faces[0], image.shape, config)
    if problem:
        raise FaceRejected(problem)
    return reconstruct_face(image, faces[0], template, jaw, generator, ship_output, config, pafs, timings, dense,
                            [face.box for face in faces[1:]])


def fit_face(image: np.ndarray, face: Face, template: Template, jaw: JawRegion, config: ReconstructParams,
             pafs: FitParams, dense: DenseAssets | None) -> Fit:
    """The template fitted to one face of the (upright) photo: the dense fit (reconstruct.dense: the face mesh's points
    and dlib's 68) or the landmark fit, each with the photo's correction threshold."""
    if not config.dense:
        return fit_landmarks(template, face.landmarks, pafs.shape_regularisation, pafs.fit_iterations, pafs.contour,
                             jaw, pafs.correction, config.correction_threshold, pafs.correction_radius_mm)
    if dense is None:
        raise ValueError("reconstruct.dense needs the face mesh assets (DenseAssets)")
    targets = dense_targets(image, face.landmarks, dense)
    fit = fit_dense(template, dense.points, targets,
                    point_weights(dense.points, pafs.point_group_weights, pafs.point_spread_mm),
                    pafs.shape_regularisation, pafs.fit_iterations, pafs.contour == "silhouette")
    if pafs.correction:
        fit = corrected_dense(template, dense.points, fit, targets, config.correction_threshold,
                              pafs.correction_radius_mm)
    return fit


def person_of(image: np.ndarray, face: Face, others: list[tuple[float, float, float, float]], pafs: FitParams,
              dense: DenseAssets | None) -> np.ndarray | None:
    """The pixels of the (upright) photo that show this face's person (pafs.person_mask; None = off): the selfie
    model around it, less the other faces' boxes (a face found turned is the only one: no boxes to turn)."""
    if not pafs.person_mask:
        return None
    if dense is None:
        raise ValueError("pafs.person_mask needs the face mesh assets (DenseAssets)")
    return person_mask(image, face.box, others if face.quarter_turns == 0 else [], dense.mesh.segmentation_model,
                       pafs.person_threshold)


def reconstruct_face(image: np.ndarray, face: Face, template: Template, jaw: JawRegion, generator: Generator,
                     ship_output: str, config: ReconstructParams, pafs: FitParams,
                     timings: dict[str, float] | None = None, dense: DenseAssets | None = None,
                     others: list[tuple[float, float, float, float]] | None = None) -> Reconstruction:
    """One found face -> fit (with the photo's correction threshold), partial texture, completed texture;
    a face found on the photo turned is fitted on the photo turned the same way.
    dense: the face mesh assets (reconstruct.dense: the dense fit; pafs.person_mask: the texels that show the
    background or another face, whose boxes are `others`, are not visible)."""
    timings = {} if timings is None else dict(timings)
    image = turned(image, face.quarter_turns)
    tick = time.perf_counter()
    fit = fit_face(image, face, template, jaw, config, pafs, dense)
    timings["fit"] = time.perf_counter() - tick
    tick = time.perf_counter()
    person = person_of(image, face, others or [], pafs, dense)
    timings["person_mask"] = time.perf_counter() - tick
    tick = time.perf_counter()
    paf, visible, box, factor = photo_partial_texture(image, template, fit, pafs.max_view_angle_degrees,
                                                      pafs.depth_tolerance_mm, config.sample_max_side, person)
    timings["sampling"] = time.perf_counter() - tick
    tick = time.perf_counter()
    texture = complete_texture(generator, paf, visible, template.texel_valid, ship_output)
    timings["inpainting"] = time.perf_counter() - tick
    result = Reconstruction(face, image, fit, paf, visible, texture, box, factor, timings)
    tick = time.perf_counter()
    result.fidelity = render_fidelity(image, template, result)
    timings["fidelity"] = time.perf_counter() - tick
    return result


FIDELITY_SIDE = 256  # the render-vs-photo check runs on the head crop at most this long


def render_fidelity(image: np.ndarray, template: Template, result: Reconstruction) -> dict[str, float]:
    """A ground-truth-free check of one reconstruction: the fitted, textured head rendered at the photo's pose
    against the photo, on the face region (inside the hull of the 68 detected landmarks, where the head
    covers the pixel fully): PSNR in dB; and the landmark residuals (fitted mesh's matched landmark vertices
    vs dlib's) before and after the non-rigid correction, as shares of the eye-corner distance."""
    x0, y0, x1, y1 = result.sample_box
    crop, factor = downscaled(image[y0:y1, x0:x1], FIDELITY_SIDE)
    fit = scaled_fit(result.fit, np.array([x0, y0], dtype=np.float64), factor)
    screen = project(fit.vertices(template), fit.rotation, fit.scale, fit.translation)
    side = max(crop.shape[:2])
    rendered, coverage = render_textured(screen, template.faces, template.vertex_uv, result.texture, side,
                                         (0, 0, 0), supersample=1)
    rendered, coverage = rendered[:crop.shape[0], :crop.shape[1]], coverage[:crop.shape[0], :crop.shape[1]]
    hull = np.zeros(crop.shape[:2], dtype=np.uint8)
    points = (result.face.landmarks - np.array([x0, y0]) + 0.5) / factor - 0.5
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(points).astype(np.int32)), 1)
    region = (hull > 0) & (coverage > 0.999)
    inter_ocular = float(np.linalg.norm(result.face.landmarks[36] - result.face.landmarks[45]))
    fitted = fitted_landmarks(template, result.fit, matched=True)
    uncorrected = Fit(result.fit.rotation, result.fit.scale, result.fit.translation, result.fit.shape,
                      result.fit.residual, result.fit.landmark_ids)
    before = fitted_landmarks(template, uncorrected, matched=True)
    residual = np.linalg.norm(fitted - result.face.landmarks, axis=1)
    return {
        "render_psnr_db": round(region_psnr(rendered, crop, region), 2),
        "face_region_pixels": int(region.sum()),
        "landmark_residual_share": round(float(residual.mean() / inter_ocular), 5),
        "landmark_residual_share_uncorrected": round(
            float(np.linalg.norm(before - result.face.landmarks, axis=1).mean() / inter_ocular), 5),
    }


# ---- pictures for people ----

def overlay(image: np.ndarray, template: Template, fit: Fit, landmarks: np.ndarray, max_side: int,
            copy: np.ndarray | None = None) -> np.ndarray:
    """The photo (downscaled to max_side) with the fitted mesh's front-facing wireframe, its outline and
    the 68 detected landmarks. `copy`: an already downscaled copy, used when it has the wanted size
    (area-averaging a 20000 px photo again costs a second)."""
    side = max(image.shape[:2])
    if copy is not None and max(copy.shape[:2]) == min(side, max_side):
        canvas, factor = copy.copy(), side / max(copy.shape[:2])
    else:
        canvas, factor = downscaled(image, max_side)
        canvas = canvas.copy()
    vertices = fit.vertices(template)
    screen = to_screen(project(vertices, fit.rotation, fit.scale, fit.translation)[:, :2], factor)
    corners = vertices[template.faces]
    facing = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]) @ fit.rotation[2] > 0
    subpixel = 4  # cv2 draws at 1/2^shift pixel precision
    triangles = np.rint(screen[template.faces] * subpixel).astype(np.int32)  # F,3,2
    lines = canvas.copy()
    cv2.polylines(lines, list(triangles[facing]), True, WIREFRAME_COLOUR, 1, cv2.LINE_AA, shift=2)
    canvas = cv2.addWeighted(lines, WIREFRAME_OPACITY, canvas, 1.0 - WIREFRAME_OPACITY, 0.0)
    silhouette = np.zeros(canvas.shape[:2], dtype=np.uint8)
    cv2.fillPoly(silhouette, list(triangles), 255, cv2.LINE_8, shift=2)
    contours, _ = cv2.findContours(silhouette, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    cv2.drawContours(canvas, contours, -1, OUTLINE_COLOUR, thickness, cv2.LINE_AA)
    for x, y in np.rint(to_screen(landmarks, factor) * subpixel).astype(np.int32):
        cv2.circle(canvas, (int(x), int(y)), max(2, thickness) * subpixel, LANDMARK_COLOUR, -1, cv2.LINE_AA, shift=2)
    return canvas


def to_screen(points: np.ndarray, factor: float) -> np.ndarray:
    """Photo pixel coordinates -> those of a copy area-downscaled by factor."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / factor - 0.5


def square_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int, fill=PREVIEW_BACKGROUND) -> np.ndarray:
    """The square around a box's centre (padded with `fill` beyond the photo), resized to size x size."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    left, top = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    height, width = image.shape[:2]
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = fill
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    square[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def preview(image: np.ndarray, template: Template, result: Reconstruction, size: int) -> np.ndarray:
    """One strip: photo (head crop) | partial texture | completed texture | the textured head rendered at
    the photo's pose and from both sides."""
    tiles = [square_crop(image, result.sample_box, size)]
    tiles += [cv2.resize(t, (size, size), interpolation=cv2.INTER_LINEAR) for t in (result.paf, result.texture)]
    vertices = result.fit.vertices(template)
    yaw, pitch, roll = result.fit.pose
    for view_yaw, view_pitch, view_roll in [(yaw, pitch, roll)] + [(y, 0.0, 0.0) for y in PREVIEW_SIDE_YAWS]:
        tiles.append(render_view(template, vertices, result.texture, view_yaw, size, view_pitch, view_roll,
                                 PREVIEW_BACKGROUND)[0])
    labels = ["photo", "partial texture", "completed texture", "render, photo's pose",
              *(f"render, yaw {y:+.0f}" for y in PREVIEW_SIDE_YAWS)]
    scale, band = size / 480, round(size / 14)
    for tile, label in zip(tiles, labels):
        tile[:band] = tile[:band] // 3  # darkened band: white text legible on any tile
        cv2.putText(tile, label, (round(band / 4), round(band * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return np.hstack(tiles)
