"""The dense fit: pose, shape and expression of the template fitted to MediaPipe's 468 face mesh points.

The points' places on the template come from the template stage (headtex.facemesh.MeshCorrespondence: the template
rendered at several poses, the mesh run on the renders, each point cast back onto the surface). The fit is the
landmark fit's (headtex.fitting.landmarks: scaled orthographic pose, then Tikhonov-regularised least squares for the
coefficients, alternated), with a weight per point and the face's outline sliding: the mesh's oval points on the side
turned away mark the silhouette of the cheek, not a fixed point of the skin, so they are matched each alternation to
the nearest vertex on the fitted head's outline. dlib's 68 landmarks are fitted beside the mesh's points as one more
point group (POINT_GROUPS, a weight each): on the renders the two together beat either alone (8 identities,
NME |yaw| <= 35 without the colour refinement: dlib alone 6.3 %, with the mesh 5.5 %); on annotated real photos the
mesh's points are less precise than dlib's (docs/RESULTS.md, "Dense landmarks").
Arrays in, arrays out: no I/O.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from headtex.facemesh import MESH_GROUP_NAMES, MESH_GROUPS, MESH_POINTS, MeshCorrespondence, face_mesh, group_of_points
from headtex.fitting.landmarks import JAW, OUTER_EYE_CORNERS, Fit, fitting_ids, landmark_correction, scaled_orthographic
from headtex.geometry import vertex_normals
from headtex.geometry.template import Template

OVAL = np.array(MESH_GROUPS["oval"])
POINT_GROUPS = MESH_GROUP_NAMES + ("dlib",)  # the fit's point groups: the mesh's, then dlib's 68 landmarks
FAR_SIDE_YAW_DEGREES = 5.0  # beyond this yaw one side of the oval counts as turned away
SILHOUETTE_COSINE = 0.3  # a vertex is on the outline when |cos(normal, view)| is below this
SILHOUETTE_REACH_MM = 15.0  # an oval point further than this from every outline vertex keeps its place


@dataclass
class DensePoints:
    """The mesh points on the template: positions and shape basis there (barycentric on their triangles)."""

    positions: np.ndarray  # N,3 float64 mm on the mean template
    basis: np.ndarray  # N,3,K float64 mm per unit coefficient (point-major: one matmul poses every point's rows)
    spread_mm: np.ndarray  # N: how far the point slides over the template stage's renders
    groups: np.ndarray  # N: index into POINT_GROUPS
    contour: np.ndarray  # indices of the points that mark the face's outline (the mesh's oval, dlib's jaw)
    outline: np.ndarray  # C vertex ids where the oval's points may slide to (the face's side, below the temples)
    outline_normals: np.ndarray  # C,3 unit normals of the template there
    side: np.ndarray  # N: +1 / -1 for points on the subject's left / right (x beyond 10 mm), 0 in the middle


@dataclass
class DenseAssets:
    """What the dense fit and the person mask need besides the template (made once per process)."""

    points: DensePoints
    mesh: MeshCorrespondence  # the correspondence and the model files


def dense_assets(template: Template, correspondence: MeshCorrespondence) -> DenseAssets:
    return DenseAssets(dense_points(template, correspondence), correspondence)


def dense_targets(image: np.ndarray, landmarks_68: np.ndarray, assets: DenseAssets) -> np.ndarray:
    """The dense fit's image points (536,2 pixels) of one face: the face mesh's 468, run in the region dlib's 68
    landmarks give, then those 68."""
    found = face_mesh(image, landmarks_68, assets.mesh.mesh_model)
    return np.concatenate([found.points[:, :2], np.asarray(landmarks_68, dtype=np.float64)])


def dense_points(template: Template, correspondence: MeshCorrespondence) -> DensePoints:
    """The correspondence's points on the template, and the outline region the oval may slide over: vertices
    around the head no further than the oval points reach, between just below the chin and the temples."""
    weights, corners = correspondence.barycentrics, correspondence.corners
    vertices = template.vertices.astype(np.float64)
    positions = np.einsum("nk,nkc->nc", weights, vertices[corners])
    basis = np.einsum("nk,mnkc->ncm", weights, template.basis[:, corners].astype(np.float64))
    oval = positions[OVAL]
    angle = np.arctan2(vertices[:, 0], vertices[:, 2] - template.layout.axis_depth(vertices[:, 1]))
    oval_angle = np.arctan2(oval[:, 0], oval[:, 2] - template.layout.axis_depth(oval[:, 1]))
    inside = ((vertices[:, 1] > oval[:, 1].min() - 15.0) & (vertices[:, 1] < oval[:, 1].max() + 5.0)
              & (np.abs(angle) <= np.abs(oval_angle).max() + np.radians(10.0)))
    outline = np.flatnonzero(inside)
    # dlib's 68 after the mesh's 468: the template's ibug vertices (inner lips split), no spread of their own.
    ibug = fitting_ids(template)
    positions = np.concatenate([positions, vertices[ibug]])
    basis = np.concatenate([basis, template.basis[:, ibug].astype(np.float64).transpose(1, 2, 0)])
    spread = np.concatenate([correspondence.spread_mm.astype(np.float64), np.zeros(len(ibug))])
    groups = np.concatenate([group_of_points(), np.full(len(ibug), len(MESH_GROUP_NAMES))])
    contour = np.concatenate([OVAL, MESH_POINTS + JAW])
    side = np.where(np.abs(positions[:, 0]) > 10.0, np.sign(positions[:, 0]), 0.0)
    return DensePoints(positions, basis, spread, groups, contour, outline,
                       vertex_normals(vertices, template.faces)[outline], side)


def point_weights(points: DensePoints, group_weights: tuple[float, ...] | list[float], spread_mm: float) -> np.ndarray:
    """The fit's weight of each mesh point: its group's weight (MESH_GROUP_NAMES order) over (1 + (spread /
    spread_mm)^2), so that points the mesh places inconsistently on the template's own renders count less."""
    if len(group_weights) != len(POINT_GROUPS):
        raise ValueError(f"one weight per point group ({', '.join(POINT_GROUPS)}), not {len(group_weights)}")
    return np.asarray(group_weights, dtype=np.float64)[points.groups] / (1.0 + (points.spread_mm / spread_mm) ** 2)


def fit_dense(template: Template, points: DensePoints, mesh_2d: np.ndarray, weights: np.ndarray,
              shape_regularisation: float, iterations: int, slide_contour: bool = True) -> Fit:
    """Pose and shape coefficients of the template fitted to one view's mesh points (N,2 image pixels, y down);
    fit_dense_views for one view."""
    return fit_dense_views(template, points, [mesh_2d], [weights], shape_regularisation, iterations,
                           slide_contour)[0]


def fit_dense_views(template: Template, points: DensePoints, meshes: list[np.ndarray], weights: list[np.ndarray],
                    shape_regularisation: float, iterations: int, slide_contour: bool = True) -> list[Fit]:
    """One shape and a pose per view fitted to several views' mesh points (each N,2 image pixels, y down).

    weights: per view, per point (point_weights), used as given (each Fit.point_weights returns them).
    shape_regularisation: Tikhonov weight on the coefficients against the weighted squared error in mm^2, counted
    once per view; each view's weights are normalised to sum to 68, so the value means what the 68-landmark fit's
    does. slide_contour: match the oval points on the side turned away to the fitted head's outline each alternation.
    """
    if not meshes:
        return []  # no view with a face: nothing to fit (and no system to solve)
    views = [np.asarray(m, dtype=np.float64)[:, :2] * np.array([1.0, -1.0]) for m in meshes]  # y up
    given = [np.asarray(w, dtype=np.float64) for w in weights]
    for q, w in zip(views, given):
        if w.shape != (len(q),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"need {len(q)} non-negative point weights, not all zero")
    normalised = [w * (68.0 / w.sum()) for w in given]
    shape = np.zeros(points.basis.shape[2])
    placed = [(points.positions, points.basis, np.full(len(points.positions), -1)) for _ in views]
    cameras = [scaled_orthographic(points.positions, q, w) for q, w in zip(views, normalised)]
    for _ in range(iterations):
        if slide_contour:
            placed = [_slide(template, points, q, shape, camera) for q, camera in zip(views, cameras)]
        cameras = [scaled_orthographic(positions + basis @ shape, q, w)
                   for (positions, basis, _), q, w in zip(placed, views, normalised)]
        shape = _fit_shape(placed, views, normalised, cameras, shape_regularisation)
    fits = []
    ibug = fitting_ids(template)
    for (positions, basis, slid), q, w, w_given, (rotation, scale, offset) in zip(placed, views, normalised, given,
                                                                                    cameras):
        predicted = scale * (positions + basis @ shape) @ rotation[:2].T + offset
        residual = float(np.sqrt(np.average(np.sum((predicted - q) ** 2, axis=1), weights=w)))
        # The 68 vertices dlib's landmarks were matched to (far-side jaw: the outline), as the landmark fit reports.
        matched = np.where(slid[MESH_POINTS:] >= 0, slid[MESH_POINTS:], ibug)
        # landmark_weights: dlib's 68 as this fit weighed them, for what follows it (the colour refinement's
        # landmark term, the correction).
        fits.append(Fit(rotation=rotation, scale=scale, translation=offset * np.array([1.0, -1.0]),
                        shape=shape.copy(), residual=residual, landmark_ids=matched,
                        landmark_weights=w_given[MESH_POINTS:].copy(), point_weights=w_given.copy()))
    return fits


def _slide(template: Template, points: DensePoints, q: np.ndarray, shape: np.ndarray,
           camera: tuple[np.ndarray, float, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points' positions and basis with the far side's contour points moved to the nearest projected outline
    vertex of the shaped head (normal across the view), where one lies within reach; and per point the vertex it
    slid to (-1 = none)."""
    rotation, scale, offset = camera
    positions, basis = points.positions.copy(), points.basis.copy()
    slid = np.full(len(positions), -1, dtype=np.int64)
    yaw = np.degrees(np.arctan2(-rotation[2, 0], rotation[2, 2]))
    if abs(yaw) <= FAR_SIDE_YAW_DEGREES:
        return positions, basis, slid
    outline = points.outline[np.abs(points.outline_normals @ rotation[2]) < SILHOUETTE_COSINE]
    if not len(outline):
        return positions, basis, slid
    far = points.contour[points.side[points.contour] == np.sign(yaw)]
    shaped = template.vertices[outline].astype(np.float64) + np.tensordot(shape, template.basis[:, outline], axes=1)
    projected = scale * shaped @ rotation[:2].T + offset
    distance = np.linalg.norm(projected[None] - q[far, None], axis=2)  # F,C
    nearest = distance.argmin(1)
    near = distance[np.arange(len(far)), nearest] < SILHOUETTE_REACH_MM * scale
    moved, vertex = far[near], outline[nearest[near]]
    positions[moved] = template.vertices[vertex]
    basis[moved] = template.basis[:, vertex].transpose(1, 2, 0)
    slid[moved] = vertex
    return positions, basis, slid


def _fit_shape(placed: list[tuple[np.ndarray, np.ndarray, np.ndarray]], views: list[np.ndarray],
               weights: list[np.ndarray], cameras: list[tuple[np.ndarray, float, np.ndarray]],
               regularisation: float) -> np.ndarray:
    """Tikhonov-regularised weighted least squares for one set of coefficients over every view (errors in mm)."""
    count = placed[0][1].shape[2]
    normal, right = len(views) * regularisation * np.eye(count), np.zeros(count)
    for (positions, basis, _), q, w, (rotation, scale, offset) in zip(placed, views, weights, cameras):
        residual = (q - offset) / scale - positions @ rotation[:2].T  # N,2 mm
        design = (rotation[:2] @ basis).reshape(-1, count)  # 2N,K, rows (point, x|y)
        weighted = design * np.repeat(w, 2)[:, None]
        normal += weighted.T @ design
        right += weighted.T @ residual.ravel()
    return np.linalg.solve(normal, right)


def corrected_dense(template: Template, points: DensePoints, fit: Fit, targets: np.ndarray, threshold: float,
                    radius_mm: float) -> Fit:
    """The dense fit with the landmark fit's non-rigid correction (fitting.landmarks.landmark_correction) towards
    dlib's 68 landmarks (targets: the fit's points, the mesh's 468 then dlib's 68, image pixels): each of them with
    weight in the fit ends within threshold x their eye-corner distance of its detection. The mesh's points take no
    part: a field through 536 centres costs ~30 ms a view, and on the renders it moves the mesh further from the
    truth (docs/RESULTS.md, "Dense landmarks"); the contour's points mark an outline, not a point of the skin."""
    q = np.asarray(targets, dtype=np.float64)[MESH_POINTS:, :2] * np.array([1.0, -1.0])  # dlib's 68, y up
    ids = np.arange(MESH_POINTS, len(points.positions))
    fitted = points.positions[ids] + points.basis[ids] @ fit.shape
    offset = fit.translation * np.array([1.0, -1.0])
    predicted = fit.scale * fitted @ fit.rotation[:2].T + offset
    weights = fit.point_weights[ids] if fit.point_weights is not None else np.ones(len(ids))
    weights = np.where(np.isin(ids, points.contour), 0.0, weights)
    inter_ocular = float(np.linalg.norm(q[OUTER_EYE_CORNERS[0]] - q[OUTER_EYE_CORNERS[1]]))
    offsets = landmark_correction(template, fit, fitted, q - predicted, weights, threshold * inter_ocular, radius_mm)
    return dataclasses.replace(fit, offsets=offsets)
