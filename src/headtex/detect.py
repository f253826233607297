"""dlib face detection (HOG or mmod CNN) and the 68-point ibug landmark predictor."""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

from headtex.io import UserError


def model_file(name: str) -> Path:
    """A model file shipped by face_recognition_models (located without importing it: its
    __init__ needs pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("face_recognition_models is not installed: `pip install face_recognition_models`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UserError(f"{path}: model file missing from face_recognition_models")
    return path


@functools.cache
def _hog() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _cnn() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))


@functools.cache
def _predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float
    landmarks: np.ndarray  # 68,2 float64 (x, y) in image pixels, ibug order


def detect_faces(image: np.ndarray, detector: str = "hog", upsample: int = 1) -> list[tuple[dlib.rectangle, float]]:
    """All faces in a uint8 RGB image, as (rectangle, score)."""
    if detector == "hog":
        boxes, scores, _ = _hog().run(image, upsample, 0.0)
        return list(zip(boxes, scores))
    if detector == "cnn":
        return [(d.rect, float(d.confidence)) for d in _cnn()(image, upsample)]
    raise UserError(f"unknown detector {detector!r}: use 'hog' or 'cnn'")


def landmarks_in_box(image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
    """The 68 ibug landmarks (x, y) inside a detected face box."""
    return np.array([[p.x, p.y] for p in _predictor()(image, box).parts()], dtype=np.float64)


def largest_face(image: np.ndarray, detector: str = "hog", upsample: int = 1) -> Detection | None:
    """The largest detected face with its 68 landmarks, or None when there is no face."""
    faces = detect_faces(image, detector, upsample)
    if not faces:
        return None
    box, score = max(faces, key=lambda face: face[0].area())
    return Detection((box.left(), box.top(), box.right(), box.bottom()), float(score), landmarks_in_box(image, box))
