"""dlib face detection (HOG or mmod CNN), the one face-choice rule, and the 68-point ibug landmark predictor."""
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


DETECTORS = ("hog", "cnn")
CONFIDENT_SHARE = 0.5  # a detection counts as a face when it scores at least this share of the best one


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float  # HOG: SVM margin; CNN: mmod confidence
    landmarks: np.ndarray  # 68,2 float64 (x, y) in image pixels, ibug order
    detector: str  # the detector that found it ...
    upsample: int  # ... and its upsampling


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


def choose_face(faces: list[tuple[dlib.rectangle, float]]) -> tuple[dlib.rectangle, float]:
    """The one face-choice rule: the largest face among those scored at least half as high as the best.

    HOG reports weak false positives (scores ~0.05 against ~1.5 for a real face), some larger than the face.
    """
    best = max(score for _, score in faces)
    confident = [face for face in faces if face[1] >= CONFIDENT_SHARE * best]
    return max(confident, key=lambda face: (face[0].area(), face[1]))


def find_face(image: np.ndarray, attempts: list[tuple[str, int]]) -> Detection | None:
    """The chosen face and its 68 landmarks from the first (detector, upsample) attempt that finds one; None = no face."""
    for detector, upsample in dict.fromkeys(attempts):
        faces = detect_faces(image, detector, upsample)
        if faces:
            box, score = choose_face(faces)
            return Detection((box.left(), box.top(), box.right(), box.bottom()), float(score),
                             landmarks_in_box(image, box), detector, upsample)
    return None
