"""Reading photographs (faces' directory source and reconstruct): one decoder, one alpha rule.

Every format problem becomes one clear UserError line naming the file. Transparent pixels are
composited on one configured colour (`photos.alpha_background`), so that training photos and the
photos a user reconstructs are read the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError
from headtex.params import param

@dataclass
class PhotosParams:
    """The shared `photos:` section: how photographs are read (faces' directory source and reconstruct)."""

    alpha_background: list[int] = param("RGB that transparent pixels are composited on (and faces' pad colour)",
                                        ge=0, le=255)

    def __post_init__(self) -> None:
        if len(self.alpha_background) != 3:
            raise ValueError(f"alpha_background must be [R, G, B], not {self.alpha_background}")


MIN_SIDE = 32  # smaller than this cannot hold a detectable face
JPEG_START = b"\xff\xd8"


def jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG file is incomplete, or None when its scan data reaches an end-of-image marker.

    Walks the marker segments up to the first scan, then looks for EOI (FF D9) after it: inside
    entropy-coded data FF is always followed by 00 or a restart marker, so the first FF D9 there is
    the image's end. This accepts data appended after the image (some phones add trailers) and is
    not fooled by an EXIF thumbnail's own FF D9, which lies in a segment before the scan.
    OpenCV would decode a truncated JPEG without error, filling the missing rows with grey.
    """
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return "corrupt JPEG (broken marker structure)"
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:
            return "corrupt JPEG (ends before any image data)"
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # start of scan
            if data.find(b"\xff\xd9", position + 2 + length) < 0:
                return "truncated JPEG (the file ends before the image does)"
            return None
        position += 2 + length
    return "truncated JPEG (the file ends before the image does)"


def read_photo(path: Path, matte: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """The photo as uint8 RGB plus notes on the conversions made (16-bit, alpha on `matte`, grayscale).

    JPEGs are decoded in colour with their EXIF orientation applied (phone photos are often
    stored sideways); other formats are decoded as stored, then converted.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error.__class__.__name__})") from None
    if not data:
        raise UserError(f"{path}: empty file, not an image")
    is_jpeg = data[:2] == JPEG_START
    if is_jpeg and (problem := jpeg_problem(data)):
        raise UserError(f"{path}: {problem}")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        if "MAX_IMAGE_PIXELS" in str(error):
            raise UserError(f"{path}: more pixels than OpenCV decodes (2^30 by default; the environment variable "
                            "OPENCV_IO_MAX_IMAGE_PIXELS raises the limit)") from None
        message = str(error).strip().splitlines()[-1]
        raise UserError(f"{path}: cannot decode ({message})") from None
    except MemoryError:
        raise UserError(f"{path}: not enough memory to decode this image") from None
    del data
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can read (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: a 20000 px photo is 1.2 GB
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    try:
        image, notes = to_rgb8(image, matte)
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise UserError(f"{path}: image is {width}x{height} px; a face needs at least {MIN_SIDE}x{MIN_SIDE}")
    return image, notes


def to_rgb8(image: np.ndarray, matte: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Any decoded image (H,W[,C], uint8/uint16/float, RGB order) as uint8 RGB, with the conversions made.

    16-bit and float images are scaled to 8 bits, grayscale is replicated to RGB and
    alpha is composited on `matte`. Raises ValueError when no safe conversion exists.
    """
    conversions = []
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"unsupported image layout {image.shape}")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)  # rounds to nearest, no float copy of a big image
        image = image[..., None] if image.ndim == 2 else image
        conversions.append("16-bit")
    elif image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ValueError("floating-point image with NaN or infinite values")
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        conversions.append("float")
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    channels = image.shape[2]
    if channels in (2, 4):
        alpha = image[..., -1:].astype(np.float32) / 255.0
        colour = image[..., :-1].astype(np.float32)
        image = np.clip(colour * alpha + np.asarray(matte, np.float32)[:colour.shape[2]] * (1 - alpha) + 0.5, 0, 255)
        image = image.astype(np.uint8)
        conversions.append("alpha")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
        conversions.append("grayscale")
    return np.ascontiguousarray(image), conversions


def make_square(image: np.ndarray, size: int, mode: str, matte: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Centre-crop (or pad with `matte`) to a square, then resize to size x size."""
    height, width = image.shape[:2]
    conversions = []
    if height != width:
        conversions.append(f"non-square {width}x{height} ({mode})")
        side = min(height, width) if mode == "crop" else max(height, width)
        if mode == "crop":
            top, left = (height - side) // 2, (width - side) // 2
            image = image[top:top + side, left:left + side]
        else:
            canvas = np.empty((side, side, 3), np.uint8)
            canvas[:] = np.asarray(matte, np.uint8)
            top, left = (side - height) // 2, (side - width) // 2
            canvas[top:top + height, left:left + width] = image
            image = canvas
    if image.shape[0] != size:
        shrink = image.shape[0] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return image, conversions


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """An area-averaged copy whose longer side is at most max_side, and the factor (original px per copy px)."""
    side = max(image.shape[:2])
    if side <= max_side:
        return image, 1.0
    factor = side / max_side
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor
