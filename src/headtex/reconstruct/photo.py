"""Reading a user's photograph: every format problem becomes one clear UserError line."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError

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


def read_photo(path: Path) -> tuple[np.ndarray, list[str]]:
    """The photo as uint8 RGB plus notes on conversions made (16-bit, alpha, grayscale).

    JPEGs are decoded in colour with their EXIF orientation applied (phone photos are often
    stored sideways); other formats are decoded as stored, then converted.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    data = path.read_bytes()
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
    notes = []
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)  # rounds to nearest, no float copy of a big image
        notes.append("16-bit converted to 8-bit")
    elif image.dtype != np.uint8:
        raise UserError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        notes.append("grayscale converted to RGB")
    elif image.shape[2] == 4:
        # Composite on white: transparent areas are background, not black skin.
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        notes.append("alpha channel composited on white")
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: a 20000 px photo is 1.2 GB
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise UserError(f"{path}: image is {width}x{height} px; a face needs at least {MIN_SIDE}x{MIN_SIDE}")
    return image, notes
