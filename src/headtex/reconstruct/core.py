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
import numpy as np
import torch

from headtex.detection import find_face as detect_face
from headtex.fitting import Fit, FitParams, JawRegion, fit_landmarks, partial_texture
from headtex.geometry import project
from headtex.geometry.template import Template, fill_invalid, render_view
from headtex.inpaint import Generator
from headtex.inpaint.model import inpaint
from headtex.params import param

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
    detection_copy: np.ndarray  # the photo downscaled for detection (the photo itself when small enough)


@dataclass
class Reconstruction:
    face: Face
    fit: Fit  # in the photo's pixels
    paf: np.ndarray  # U,U,3 uint8, 0 where not visible
    visible: np.ndarray  # U,U uint8, 255 = visible
    texture: np.ndarray  # U,U,3 uint8: the model's completion (known texels kept), off-head texels filled
    sample_box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the photo crop the texture was sampled from
    sample_factor: float  # photo pixels per pixel of that crop after area-averaging (1 = full resolution)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """An area-averaged copy whose longer side is at most max_side, and the factor (original px per copy px)."""
    side = max(image.shape[:2])
    if side <= max_side:
        return image, 1.0
    factor = side / max_side
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def to_original(points: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Pixel coordinates in an area-downscaled copy -> the original's (pixel centres at integers)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5


def scaled_fit(fit: Fit, offset: np.ndarray, factor: float) -> Fit:
    """The same camera for the image cropped at `offset` (x, y) and then downscaled by `factor`."""
    translation = (np.asarray(fit.translation, dtype=np.float64) - offset + 0.5) / factor - 0.5
    return Fit(fit.rotation, fit.scale / factor, translation, fit.shape, fit.residual, fit.landmark_ids, fit.offsets)


def detection_attempts(config: ReconstructParams, fitting: FitParams) -> list[tuple[str, int]]:
    """(detector, upsample) tried in order until one finds a face.

    Photos hold larger faces than the pipeline's 256 px renders, so the first try does not upsample
    (HOG finds faces from ~80 px); one more upsampling step finds faces down to ~40 px, and the
    pafs fallback detector (the mmod CNN, ~20x slower) catches turned faces HOG misses.
    """
    attempts = [(fitting.detector, config.upsample), (fitting.detector, config.upsample + 1)]
    if fitting.fallback_detector:
        attempts.append((fitting.fallback_detector, fitting.fallback_upsample))
    return list(dict.fromkeys(attempts))


def find_face(image: np.ndarray, config: ReconstructParams, fitting: FitParams,
              timings: dict[str, float] | None = None) -> Face | None:
    """The chosen face (headtex.detection's rule) and its 68 landmarks, in the photo's pixels; None = no face."""
    timings = {} if timings is None else timings
    tick = time.perf_counter()
    small, factor = downscaled(image, config.detect_max_side)
    detection = detect_face(small, detection_attempts(config, fitting))
    timings["detection"] = time.perf_counter() - tick
    if detection is None:
        return None
    # Per axis: the copy's sides are rounded, so its x and y factors differ slightly.
    axis_factor = np.array([image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]])
    landmarks = to_original(detection.landmarks, axis_factor)
    corners = to_original(np.reshape(detection.box, (2, 2)), axis_factor)
    return Face(landmarks, tuple(float(v) for v in corners.ravel()), detection.score, detection.detector,
                detection.upsample, factor, small)


def head_box(image_shape: tuple[int, ...], screen: np.ndarray, margin: int = 2) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of the projected head within the image, at least 1x1."""
    height, width = image_shape[:2]
    x0 = int(np.clip(np.floor(screen[:, 0].min()) - margin, 0, width - 1))
    y0 = int(np.clip(np.floor(screen[:, 1].min()) - margin, 0, height - 1))
    x1 = int(np.clip(np.ceil(screen[:, 0].max()) + margin + 1, x0 + 1, width))
    y1 = int(np.clip(np.ceil(screen[:, 1].max()) + margin + 1, y0 + 1, height))
    return x0, y0, x1, y1


def sampling_view(image: np.ndarray, template: Template, fit: Fit, max_side: int
                  ) -> tuple[np.ndarray, Fit, tuple[int, int, int, int], float]:
    """(crop of the photo around the projected head, at most max_side on a side; the fit in its pixels;
    the crop's box in the photo; photo pixels per crop pixel). The z-buffer then costs the head's size,
    not the photo's."""
    screen = project(fit.vertices(template), fit.rotation, fit.scale, fit.translation)
    box = head_box(image.shape, screen)
    crop, factor = downscaled(image[box[1]:box[3], box[0]:box[2]], max_side)
    return crop, scaled_fit(fit, np.array(box[:2], dtype=np.float64), factor), box, factor


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


def complete_texture(generator: Generator, paf: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                     ship_output: str) -> np.ndarray:
    """The model's completion of one partial texture; off-head texels are then filled from their
    neighbours so that bilinear lookups at the head's UV border (MeshLab, renders) never blend in black."""
    with torch.inference_mode():
        completed = inpaint(generator, paf[None], visible[None], valid, ship_output, batch_size=1)[0]
    return fill_invalid(completed, valid)


def reconstruct(image: np.ndarray, template: Template, jaw: JawRegion, generator: Generator, ship_output: str,
                config: ReconstructParams, pafs: FitParams) -> Reconstruction | None:
    """Photo (uint8 RGB, any size) -> face, fit, partial texture, completed texture; None = no face."""
    timings: dict[str, float] = {}
    face = find_face(image, config, pafs, timings)
    if face is None:
        return None
    tick = time.perf_counter()
    fit = fit_landmarks(template, face.landmarks, pafs.shape_regularisation, pafs.fit_iterations, pafs.contour, jaw,
                        pafs.correction, config.correction_threshold, pafs.correction_radius_mm)
    timings["fit"] = time.perf_counter() - tick
    tick = time.perf_counter()
    crop, crop_fit, box, factor = sampling_view(image, template, fit, config.sample_max_side)
    paf, visible, _ = partial_texture(crop, template, crop_fit, pafs.max_view_angle_degrees, pafs.depth_tolerance_mm)
    timings["sampling"] = time.perf_counter() - tick
    tick = time.perf_counter()
    texture = complete_texture(generator, paf, visible, template.texel_valid, ship_output)
    timings["inpainting"] = time.perf_counter() - tick
    return Reconstruction(face, fit, paf, visible, texture, box, factor, timings)


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
