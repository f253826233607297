"""Template core: scan in, normalised head + UV layout + albedo + shape basis out (arrays only, no I/O)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from headtex.geometry import rasterize, sample_texture, surface_points, vertex_normals
from headtex.geometry.template import Template, fill_invalid
from headtex.geometry.uv import UVLayout

# james.ljson lists its 68 points grouped as chin, eye, eye, brow, nose, brow,
# mouth; ibug order is chin, brows, nose, eyes, mouth. ljson index per ibug index:
IBUG_FROM_LJSON = np.r_[0:17, 29:34, 43:48, 34:43, 17:23, 23:29, 48:68]

# ibug index pairs that mirror each other across the face's symmetry plane.
IBUG_MIRROR_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
)


@dataclass
class Scan:
    """A textured scan as read from OBJ: positions, faces, and per-corner atlas coordinates."""

    vertices: np.ndarray  # V,3 float64
    faces: np.ndarray  # F,3 int64
    atlas_uv: np.ndarray  # T,2 float64 (OBJ convention: v up)
    faces_uv: np.ndarray  # F,3 int64 indices into atlas_uv


def parse_obj(text: str) -> Scan:
    """Parse a triangulated OBJ with positions and texture coordinates."""
    vertices, atlas_uv, faces, faces_uv = [], [], [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(c) for c in parts[1:4]])
        elif parts[0] == "vt":
            atlas_uv.append([float(c) for c in parts[1:3]])
        elif parts[0] == "f":
            if len(parts) != 4:
                raise ValueError(f"OBJ face with {len(parts) - 1} corners; only triangles are supported")
            corners = [p.split("/") for p in parts[1:]]
            faces.append([int(c[0]) - 1 for c in corners])
            faces_uv.append([int(c[1]) - 1 for c in corners])
    if not vertices or not faces or not atlas_uv:
        raise ValueError("OBJ has no vertices, faces or texture coordinates")
    return Scan(np.array(vertices), np.array(faces, dtype=np.int64), np.array(atlas_uv), np.array(faces_uv, dtype=np.int64))


def parse_ljson_landmarks(text: str) -> np.ndarray:
    """The 68 3D landmarks of a menpo LJSON v3 file, in ibug order."""
    data = json.loads(text)
    groups = data["groups"]
    points = np.array(next(iter(groups.values()))["landmarks"]["points"], dtype=np.float64)
    if points.shape != (68, 3):
        raise ValueError(f"expected 68 3D landmarks, found an array of shape {points.shape}")
    return points[IBUG_FROM_LJSON]


def normalise(vertices: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate and centre a head so that x runs along its symmetry axis, y up, z out of the face.

    The x axis is the mean direction of the mirrored landmark pairs, y points from
    the mouth to the eyes, and the origin is the mean midpoint of the pairs.
    The scan is already in millimetres. Returns (vertices, landmarks, rotation).
    """
    right = landmarks[[p[0] for p in IBUG_MIRROR_PAIRS]]
    left = landmarks[[p[1] for p in IBUG_MIRROR_PAIRS]]
    x_axis = (left - right) / np.linalg.norm(left - right, axis=1, keepdims=True)
    x_axis = x_axis.mean(0) / np.linalg.norm(x_axis.mean(0))
    y_axis = landmarks[36:48].mean(0) - landmarks[48:68].mean(0)
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    centre = ((left + right) / 2).mean(0)
    return (vertices - centre) @ rotation.T, (landmarks - centre) @ rotation.T, rotation


def crop_to_layout(scan: Scan, layout: UVLayout) -> tuple[Scan, np.ndarray]:
    """Keep the triangles that lie wholly inside the UV layout; returns the cropped scan and old→new vertex ids."""
    uv = layout.uv(scan.vertices)
    inside = np.all((uv >= 0.0) & (uv <= 1.0), axis=1)
    corner_u = uv[scan.faces, 0]
    keep = inside[scan.faces].all(1) & (corner_u.max(1) - corner_u.min(1) < 0.5)
    used = np.unique(scan.faces[keep])
    new_id = np.full(len(scan.vertices), -1, dtype=np.int64)
    new_id[used] = np.arange(len(used))
    cropped = Scan(scan.vertices[used], new_id[scan.faces[keep]], scan.atlas_uv, scan.faces_uv[keep])
    return cropped, new_id


def texel_map(vertices: np.ndarray, faces: np.ndarray, layout: UVLayout, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per texel of a size×size UV image: the triangle that owns it (-1 = none) and its barycentrics.

    Where the cylinder ray meets the surface twice (nostrils, behind the ears),
    the outermost surface owns the texel, so each texel has exactly one owner.
    """
    screen = np.column_stack([layout.uv(vertices) * size - 0.5, layout.radius(vertices)])
    return rasterize(screen, faces, size, size)


def resample_albedo(
    scan: Scan, atlas: np.ndarray, triangle_id: np.ndarray, barycentrics: np.ndarray
) -> np.ndarray:
    """Colour every owned texel from the scan's texture atlas (uint8 RGB, zeros on invalid texels)."""
    valid = triangle_id >= 0
    atlas_uv = surface_points(scan.atlas_uv, scan.faces_uv, triangle_id[valid], barycentrics[valid])
    atlas_uv[:, 1] = 1.0 - atlas_uv[:, 1]  # OBJ texture v points up
    albedo = np.zeros(triangle_id.shape + (3,), dtype=np.uint8)
    albedo[valid] = sample_texture(atlas, atlas_uv)
    return albedo


def _smooth_step(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def _bump(vertices: np.ndarray, centres: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian falloff (V,) of the distance to the nearest of some centre points."""
    distance = np.linalg.norm(vertices[:, None] - np.atleast_2d(centres)[None], axis=2).min(1)
    return np.exp(-0.5 * (distance / sigma_mm) ** 2)


def shape_basis(vertices: np.ndarray, landmarks: np.ndarray, normals: np.ndarray) -> tuple[list[str], np.ndarray]:
    """A small linear basis of named, smooth deformations (K, V, 3), in mm per unit coefficient.

    Each mode is a smooth displacement field anchored on landmarks; a coefficient
    of ±1 is a typical (one standard deviation) change between adult faces.
    """
    x, y, z = vertices.T
    zero = np.zeros_like(x)
    eye_y = landmarks[36:48, 1].mean()
    mouth_y = landmarks[48:68, 1].mean()
    brow_y = landmarks[17:27, 1].mean()
    frontal = _smooth_step((z + 40.0) / 15.0)  # fades out towards the back of the head
    lower_face = _smooth_step((mouth_y + 10.0 - y) / 12.0) * frontal
    nose = _bump(vertices, landmarks[30], 14.0)
    nose_base = _bump(vertices, landmarks[31:36], 10.0)
    eyes = _bump(vertices, np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)]), 14.0)
    cheeks = _bump(vertices, np.stack([(landmarks[3] + landmarks[31]) / 2, (landmarks[13] + landmarks[35]) / 2]), 20.0)
    modes = {
        "head_width": np.stack([0.04 * x, zero, zero], 1),
        "face_length": np.stack([zero, 0.07 * (y - eye_y) * _smooth_step((eye_y - y) / 15.0), zero], 1),
        "jaw_width": np.stack([0.08 * x * lower_face, zero, zero], 1),
        "chin_length": np.stack([zero, -5.0 * _bump(vertices, landmarks[8], 22.0), zero], 1),
        "forehead_height": np.stack([zero, 0.06 * (y - brow_y) * _smooth_step((y - brow_y) / 15.0) * frontal, zero], 1),
        "nose_length": np.stack([zero, -3.5 * nose_base, zero], 1),
        "nose_depth": np.stack([zero, zero, 5.0 * nose], 1),
        "nose_width": np.stack([0.2 * (x - landmarks[33, 0]) * nose_base, zero, zero], 1),
        "eye_spacing": np.stack([3.0 * np.tanh(x / 10.0) * eyes, zero, zero], 1),
        "brow_ridge": np.stack([zero, zero, 3.0 * _bump(vertices, landmarks[17:27], 12.0)], 1),
        "mouth_width": np.stack([0.12 * (x - landmarks[51, 0]) * _bump(vertices, landmarks[48:68].mean(0), 16.0), zero, zero], 1),
        "cheek_fullness": 4.0 * cheeks[:, None] * normals,
    }
    # Craniofacial proportions around the features a face recogniser weighs most (eyes, brows, nose, mouth).
    eye_centres = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
    side = np.sign(x)  # +1 on the subject's left
    near_eye = np.where(x[:, None] < 0, vertices - eye_centres[0], vertices - eye_centres[1])  # to this side's eye
    eye_zone = _bump(vertices, eye_centres, 9.0)
    brows = _bump(vertices, landmarks[17:27], 10.0)
    brow_mid_x = np.abs(landmarks[17:27, 0]).mean()
    mouth_centre = landmarks[60:68].mean(0)
    mouth = _bump(vertices, landmarks[48:60], 7.0)
    corners = _bump(vertices, landmarks[[48, 54]], 9.0)
    cheekbones = _bump(vertices, np.stack([(landmarks[1] + landmarks[36]) / 2, (landmarks[15] + landmarks[45]) / 2]), 16.0)
    chin = _bump(vertices, landmarks[8], 16.0)
    modes |= {
        "eye_size": np.stack([0.28 * near_eye[:, 0] * eye_zone, 0.28 * near_eye[:, 1] * eye_zone, zero], 1),
        "eye_opening": np.stack([zero, 0.25 * near_eye[:, 1] * _bump(vertices, eye_centres, 7.0), zero], 1),
        "eye_height": np.stack([zero, 2.5 * _bump(vertices, eye_centres, 12.0), zero], 1),
        "eye_tilt": np.stack([zero, 0.24 * near_eye[:, 0] * side * eye_zone, zero], 1),
        "eye_depth": np.stack([zero, zero, -2.5 * _bump(vertices, eye_centres, 11.0)], 1),
        "brow_height": np.stack([zero, 2.5 * brows, zero], 1),
        "brow_tilt": np.stack([zero, 0.08 * (np.abs(x) - brow_mid_x) * brows, zero], 1),
        "nose_bridge": np.stack([zero, zero, 2.5 * _bump(vertices, landmarks[28], 8.0)], 1),
        "nostril_width": np.stack([0.12 * (x - landmarks[33, 0]) * _bump(vertices, landmarks[[31, 35]], 6.0), zero, zero], 1),
        "lip_thickness": np.stack([zero, 0.2 * (y - mouth_centre[1]) * mouth, 1.0 * mouth], 1),
        "mouth_height": np.stack([zero, 2.5 * _bump(vertices, landmarks[48:68], 10.0), zero], 1),
        "cheekbones": np.stack([0.05 * x * cheekbones, zero, 2.0 * cheekbones], 1),
        "chin_width": np.stack([0.15 * (x - landmarks[8, 0]) * chin, zero, zero], 1),
        "chin_depth": np.stack([zero, zero, 4.0 * chin], 1),
        "face_depth": np.stack([zero, zero, 0.06 * (z + 40.0) * frontal], 1),
        "eye_width": np.stack([0.28 * near_eye[:, 0] * eye_zone, zero, zero], 1),
        "brow_spacing": np.stack([2.5 * side * brows, zero, zero], 1),
        "upper_lip": np.stack([zero, 2.0 * _bump(vertices, landmarks[49:54], 5.0), zero], 1),
        "lower_lip": np.stack([zero, -2.0 * _bump(vertices, landmarks[55:60], 5.0), zero], 1),
        "midface_length": np.stack([zero, -3.0 * _smooth_step((eye_y - 12.0 - y) / 6.0) * frontal, zero], 1),
        "asymmetry": np.stack([zero, 1.5 * side * _bump(vertices, np.vstack([eye_centres, landmarks[17:27]]), 12.0), zero], 1),
        # Expressions (one per identity, the same in all of its views): smile, open mouth, raised brows.
        "expression_smile": np.stack([1.5 * side * corners, 2.5 * corners + 1.0 * cheeks, 0.8 * corners], 1),
        "expression_mouth_open": np.stack([zero, -2.0 * _smooth_step((mouth_centre[1] - y) / 1.5) * lower_face
                                           * _bump(vertices, landmarks[[57, 8]], 25.0), zero], 1),
        "expression_brows_raised": np.stack([zero, 2.0 * _bump(vertices, landmarks[17:27], 14.0), zero], 1),
    }
    return list(modes), np.stack(list(modes.values())).astype(np.float32)


def build_template(scan: Scan, landmarks: np.ndarray, atlas: np.ndarray, layout: UVLayout, uv_size: int, render_uv_size: int) -> Template:
    """Normalise the scan, crop it to the UV layout, resample its texture and derive the shape basis."""
    vertices, landmarks, _ = normalise(scan.vertices, landmarks)
    scan = Scan(vertices, scan.faces, scan.atlas_uv, scan.faces_uv)
    landmark_ids = np.linalg.norm(vertices[None] - landmarks[:, None], axis=2).argmin(1)
    scan, new_id = crop_to_layout(scan, layout)
    if np.any(new_id[landmark_ids] < 0):
        raise ValueError("the UV layout crops away some of the 68 landmarks")
    landmark_ids = new_id[landmark_ids]

    maps = {}
    for size in (uv_size, render_uv_size):
        triangle, barycentrics = texel_map(scan.vertices, scan.faces, layout, size)
        albedo = resample_albedo(scan, atlas, triangle, barycentrics)
        maps[size] = (fill_invalid(albedo, triangle >= 0), triangle, barycentrics)
    names, basis = shape_basis(scan.vertices, scan.vertices[landmark_ids], vertex_normals(scan.vertices, scan.faces))
    return Template(
        vertices=scan.vertices.astype(np.float32),
        faces=scan.faces.astype(np.int32),
        vertex_uv=layout.uv(scan.vertices).astype(np.float32),
        landmark_ids=landmark_ids.astype(np.int64),
        basis=basis,
        basis_names=names,
        albedo=maps[uv_size][0],
        texel_triangle=maps[uv_size][1],
        texel_barycentrics=maps[uv_size][2],
        albedo_render=maps[render_uv_size][0],
        render_texel_triangle=maps[render_uv_size][1],
        render_texel_barycentrics=maps[render_uv_size][2],
        layout=layout,
    )




MIN_CAST_COSINE = 0.35  # a cast counts only where the surface faces the camera within ~70 deg (grazing casts slide)


def mesh_correspondence(vertices: np.ndarray, faces: np.ndarray, casts: list[tuple[np.ndarray, np.ndarray]],
                        height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where on the template each mesh point lies, from renders of the template.

    casts: per render, (screen V,3 of the template's vertices as rendered, the mesh's points N,2 found on the render).
    Each point is cast back through the render's z-buffer onto the surface (the triangle under its pixel and the
    barycentrics there), where the surface faces the camera. A point's place is its cast nearest the mean of its
    casts (a surface point, never a chord through the head; the template's vertices lie ~4 mm apart, too coarse to
    snap to), its spread the RMS distance of the casts from their mean (a contour point slides with the pose: a
    large spread, which the fit weighs down). Returns (triangle corners N,3 vertex ids, barycentrics N,3, spread mm
    N, casts used per point N); ValueError when a point never lands on the surface.
    """
    count = len(casts[0][1])
    normals = vertex_normals(vertices, faces)
    positions, corners_all, weights_all = [], [], []
    for screen, points in casts:
        triangle, barycentrics = rasterize(screen, faces, height, width)
        pixel = np.rint(points).astype(np.int64)
        inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
        hit = np.full(count, -1, dtype=np.int64)
        hit[inside] = triangle[pixel[inside, 1], pixel[inside, 0]]
        weights = np.zeros((count, 3))
        weights[hit >= 0] = barycentrics[pixel[hit >= 0, 1], pixel[hit >= 0, 0]]
        corners = faces[np.maximum(hit, 0)].astype(np.int64)
        surface = np.einsum("nk,nkc->nc", weights, vertices[corners].astype(np.float64))
        facing = _screen_facing(screen, vertices, np.einsum("nk,nkc->nc", weights, normals[corners]))
        surface[(hit < 0) | (facing < MIN_CAST_COSINE)] = np.nan
        positions.append(surface)
        corners_all.append(corners)
        weights_all.append(weights)
    stack = np.stack(positions)  # R,N,3
    used = np.isfinite(stack[..., 0]).sum(0)
    if np.any(used == 0):
        raise ValueError(f"{int(np.sum(used == 0))} mesh points never landed on the template's surface")
    mean = np.nanmean(stack, axis=0)
    distance = np.linalg.norm(stack - mean, axis=2)  # R,N (nan where not cast)
    spread = np.sqrt(np.nanmean(distance ** 2, axis=0))
    best = np.nanargmin(distance, axis=0)
    points = np.arange(count)
    return (np.stack(corners_all)[best, points], np.stack(weights_all)[best, points], spread, used)


def _screen_facing(screen: np.ndarray, vertices: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """cos(angle between head-frame normals and the direction to the camera) for a weak-perspective render whose
    screen coordinates are screen = s R X + t (y flipped): the camera direction is R's third row."""
    centred = vertices - vertices.mean(0)
    projected = screen - screen.mean(0)
    projected = projected * np.array([1.0, -1.0, 1.0])  # back to y up
    linear = np.linalg.lstsq(centred, projected, rcond=None)[0].T  # 3,3 = s R
    towards = linear[2] / np.linalg.norm(linear[2])
    unit = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return unit @ towards
