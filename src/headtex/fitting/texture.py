"""The partial UV texture of one photo, sampled through the fitted mesh with a per-texel visibility test
(pafs' renders; reconstruct's and evaluate's photographs of any size through `photo_partial_texture`)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from headtex.fitting.landmarks import Fit
from headtex.geometry import depth_map, project, sample_texture, vertex_normals, view_direction, visible_points
from headtex.geometry.template import Template
from headtex.photos import downscaled


def partial_texture(
    image: np.ndarray,
    template: Template,
    fit: Fit,
    max_view_angle_degrees: float,
    depth_tolerance_mm: float,
    person: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the image into the template's UV layout through the fitted mesh.

    Per valid texel: its point on the fitted (shaped, posed) mesh, projected into the
    image; visible when it faces the camera within max_view_angle_degrees and no
    surface of the fitted mesh lies more than depth_tolerance_mm in front of it
    (z-buffer). Returns (paf U,U,3 uint8 with 0 where not visible, visible U,U uint8
    255/0, view_cosine U,U uint8 = cos(view angle) * 255, 0 where not visible).
    Occluded texels stay empty: nothing is interpolated. person: H,W bool, the pixels that show this person
    (facemesh.person_mask); a texel whose pixel shows the background or someone else is not visible (the fitted
    mesh's edge overlaps the wall behind the head, a neighbour's shirt under the chin). None = every pixel.
    """
    height, width = image.shape[:2]
    rows, cols = np.nonzero(template.texel_valid)
    points, normals, seen = _texel_view(template, fit, height, width, rows, cols, max_view_angle_degrees,
                                        depth_tolerance_mm)
    if person is not None:
        pixel = np.rint(points[:, :2]).astype(np.int64)
        inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
        seen &= inside & person[np.clip(pixel[:, 1], 0, height - 1), np.clip(pixel[:, 0], 0, width - 1)]
    towards_camera = view_direction(fit.rotation)
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




def _texel_view(template: Template, fit: Fit, height: int, width: int, rows: np.ndarray, cols: np.ndarray,
                max_view_angle_degrees: float, depth_tolerance_mm: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen points (N,3), unit normals (N,3) and visibility (N bool) of some valid texels under a fit."""
    vertices = fit.vertices(template)
    screen = project(vertices, fit.rotation, fit.scale, fit.translation)
    depth = depth_map(screen, template.faces, height, width)
    corners = template.faces[template.texel_triangle[rows, cols]]  # N,3
    weights = template.texel_barycentrics[rows, cols].astype(np.float64)  # N,3
    # Screen position and normal per texel, interpolated in one pass (projection is affine, so
    # interpolating projected corners is exact).
    per_vertex = np.concatenate([screen, vertex_normals(vertices, template.faces)], axis=1)
    texel = sum(weights[:, k, None] * per_vertex[corners[:, k]] for k in range(3))
    points, normals = texel[:, :3], texel[:, 3:]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    seen = visible_points(points, normals, view_direction(fit.rotation), depth, depth_tolerance_mm * fit.scale,
                          max_view_angle_degrees)
    return points, normals, seen


def visible_texels(template: Template, fit: Fit, height: int, width: int, rows: np.ndarray, cols: np.ndarray,
                   max_view_angle_degrees: float, depth_tolerance_mm: float, downscale: int) -> np.ndarray:
    """Which of the given valid texels an image (height x width) sees through the fit: partial_texture's test,
    on a z-buffer `downscale` times smaller on a side (coarser occlusion edges, downscale^2 times cheaper)."""
    if downscale > 1:
        fit = scaled_fit(fit, np.zeros(2), downscale)
        height, width = -(-height // downscale), -(-width // downscale)
    return _texel_view(template, fit, height, width, rows, cols, max_view_angle_degrees, depth_tolerance_mm)[2]


def scaled_fit(fit: Fit, offset: np.ndarray, factor: float) -> Fit:
    """The same fit (shape, correction and all) for the image cropped at `offset` (x, y), then downscaled by `factor`."""
    # Pixel centres at integers: x_small = (x - offset + 0.5) / factor - 0.5.
    translation = (np.asarray(fit.translation, dtype=np.float64) - offset + 0.5) / factor - 0.5
    return dataclasses.replace(fit, scale=fit.scale / factor, translation=translation)


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


def photo_partial_texture(image: np.ndarray, template: Template, fit: Fit, max_view_angle_degrees: float,
                          depth_tolerance_mm: float, max_side: int, person: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], float]:
    """partial_texture of a photograph of any size, sampled from its head crop (`sampling_view`): (paf, visible,
    the crop's box in the photo, photo pixels per crop pixel). One path for reconstruct, its benchmark and
    evaluate's real photographs. person: the photo's person mask (H,W bool; None = none)."""
    crop, crop_fit, box, factor = sampling_view(image, template, fit, max_side)
    if person is not None:
        person = cv2.resize(person[box[1]:box[3], box[0]:box[2]].astype(np.uint8), crop.shape[1::-1],
                            interpolation=cv2.INTER_NEAREST) > 0
    paf, visible, _ = partial_texture(crop, template, crop_fit, max_view_angle_degrees, depth_tolerance_mm, person)
    return paf, visible, box, factor
