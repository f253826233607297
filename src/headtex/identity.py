"""Who a face is, to a face recogniser: dlib's ResNet face descriptor and the pair statistics of issue 14.

Two faces are the same person when their descriptors lie closer than `SAME_PERSON` (dlib's documented
threshold for `dlib_face_recognition_resnet_model_v1`, 99.38 % on LFW).
"""
from __future__ import annotations

import functools

import dlib
import numpy as np

from headtex.detection import find_face, model_file

SAME_PERSON = 0.6
DESCRIPTOR_SIZE = 128


@functools.cache
def _recogniser() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def _shape(landmarks: np.ndarray) -> dlib.full_object_detection:
    points = dlib.points()
    for x, y in np.asarray(landmarks, float):
        points.append(dlib.point(int(round(x)), int(round(y))))
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    box = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return dlib.full_object_detection(box, points)


def face_descriptor(image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
    """The 128-d descriptor of the face in a uint8 RGB image (dlib aligns a 150 px chip on the 68 landmarks);
    landmarks None = detect (HOG, then the CNN); None when no face is found."""
    if landmarks is None:
        found = find_face(image, [("hog", 1), ("cnn", 0)])
        if found is None:
            return None
        landmarks = found.landmarks
    chip = dlib.get_face_chip(np.ascontiguousarray(image), _shape(landmarks), size=150, padding=0.25)
    return np.asarray(_recogniser().compute_face_descriptor(chip), np.float32)


def pair_distances(descriptors: np.ndarray, max_pairs: int | None = None, seed: int = 0) -> np.ndarray:
    """Euclidean distances between every pair of rows (i < j); a seeded sample of max_pairs when there are more."""
    descriptors = np.asarray(descriptors, np.float64)
    rows, cols = np.triu_indices(len(descriptors), k=1)
    if max_pairs is not None and len(rows) > max_pairs:
        chosen = np.sort(np.random.default_rng(seed).choice(len(rows), max_pairs, replace=False))
        rows, cols = rows[chosen], cols[chosen]
    return np.linalg.norm(descriptors[rows] - descriptors[cols], axis=1)


def identity_report(frontal: np.ndarray, sides: np.ndarray, max_pairs: int | None = None) -> dict:
    """Issue 14's figures from descriptors: frontal (N,128) at yaw 0 and sides (N,S,128) at other yaws (NaN rows
    where no face was found; those identities count as inconsistent and drop out of the pair figures)."""
    frontal = np.asarray(frontal, np.float64)
    found = ~np.isnan(frontal).any(axis=1)
    between = pair_distances(frontal[found], max_pairs)
    within = np.linalg.norm(np.asarray(sides, np.float64) - frontal[:, None], axis=2)  # NaN where either is missing
    consistent = np.all(within < SAME_PERSON, axis=1)  # NaN compares False: a missing view is not consistent
    return {
        "identities": int(len(frontal)),
        "frontal_faces_found": int(found.sum()),
        "pairs": int(len(between)),
        "median_between_distance": round(float(np.median(between)), 4) if len(between) else None,
        "share_pairs_different": round(float(np.mean(between >= SAME_PERSON)), 4) if len(between) else None,
        "median_within_distance": round(float(np.nanmedian(within)), 4) if np.isfinite(within).any() else None,
        "share_identities_consistent": round(float(consistent.mean()), 4) if len(consistent) else None,
        "same_person_threshold": SAME_PERSON,
    }
