"""The mask convention and mask generators, shared by every stage that handles masks (no torch here).

Dataset convention (thesis figure 3.3): uint8, 255 = visible/known, 0 = missing. The model's input hole
channel is 1 = missing; `hole_from_visible` is the only place that converts one into the other.
"""
from __future__ import annotations

import cv2
import numpy as np

FREE_FORM_CANVAS = 256  # the DeepFillv2 port draws its strokes on a 256 px canvas


def is_visible(mask: np.ndarray) -> np.ndarray:
    """Texels a mask (255 = visible/known) marks visible, as bool."""
    return mask >= 128


def missing_region(visible: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Texels to inpaint (bool): not visible in the mask and on the head (the UV valid region).

    Texels off the head are never holes: they are known (whatever the texture holds there), so the
    generator is neither asked to paint them nor scored on them.
    """
    return ~is_visible(visible) & valid


def hole_from_visible(visible: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The model's hole channel (float32, 1 = missing) from masks (..., U, U; 255 = visible)."""
    return missing_region(visible, valid).astype(np.float32)


def missing_share(masks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per mask (N, U, U): the share of the UV valid region that is missing (0 = all visible)."""
    return missing_region(masks, valid).sum(axis=(1, 2)) / max(int(valid.sum()), 1)



def free_form_mask(rng: np.random.Generator, size: int, max_strokes: int = 15) -> np.ndarray:
    """A free-form stroke mask (size, size) uint8, 255 = visible, as the DeepFillv2 port's generator draws them.

    On a 256 px canvas: 0..max_strokes strokes, each from a random start through 1-5 segments; a segment
    turns to 0.01 + randint(0..3) radians (mirrored, 2π - angle, on even strokes), runs 10-49 px and is
    drawn by cv2.line with a 5-14 px brush. Scaled to `size`. A draw with no stroke is drawn again, so
    the mask is never empty.
    """
    while True:
        canvas = np.zeros((FREE_FORM_CANVAS, FREE_FORM_CANVAS), dtype=np.uint8)
        for stroke in range(int(rng.integers(0, max_strokes + 1))):
            x, y = (int(c) for c in rng.integers(0, FREE_FORM_CANVAS, size=2))
            for _ in range(1 + int(rng.integers(5))):
                angle = 0.01 + int(rng.integers(4))
                if stroke % 2 == 0:
                    angle = 2 * np.pi - angle
                length = 10 + int(rng.integers(40))
                brush = 5 + int(rng.integers(10))
                end_x, end_y = int(x + length * np.sin(angle)), int(y + length * np.cos(angle))
                cv2.line(canvas, (x, y), (end_x, end_y), 255, brush)
                x, y = end_x, end_y
        if size != FREE_FORM_CANVAS:
            canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        missing = canvas >= 128
        if missing.any():
            return np.where(missing, 0, 255).astype(np.uint8)


def blob_mask(rng: np.random.Generator, inside: np.ndarray, max_blobs: int = 4,
              radius_share: tuple[float, float] = (0.02, 0.15)) -> np.ndarray:
    """1..max_blobs filled ellipses, centred on texels of `inside` (U,U bool: where a photo shows the face), with
    semi-axes a uniform share of the side; (U,U) uint8, 255 = visible (the blobs 0). What hides part of a seen face:
    the real-face evaluation's holes, and training's `p_blob` masks."""
    size = inside.shape[0]
    candidates = np.argwhere(inside)
    canvas = np.full((size, size), 255, np.uint8)
    if not len(candidates):
        return canvas
    for _ in range(1 + int(rng.integers(max_blobs))):
        y, x = candidates[int(rng.integers(len(candidates)))]
        axes = tuple(max(1, int(round(size * rng.uniform(*radius_share)))) for _ in range(2))
        cv2.ellipse(canvas, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360, 0, -1)
    return canvas


def draw_training_mask(
    rng: np.random.Generator, bank: np.ndarray, p_real: float = 0.8, size: int | None = None, max_strokes: int = 15,
    p_blob: float = 0.0, valid: np.ndarray | None = None,
) -> np.ndarray:
    """One training mask (size, size) uint8, 255 = visible: a bank mask with probability p_real, a bank mask with
    blobs hiding part of what it shows with probability p_blob (a real photo's partial with holes in the face;
    needs `valid`), else free-form (thesis 3.4)."""
    size = size or (bank.shape[1] if len(bank) else None)
    if size is None:
        raise ValueError("draw_training_mask: give `size` when the bank is empty")
    draw = rng.random()
    if draw < p_real + p_blob:
        if len(bank) == 0:
            raise ValueError("draw_training_mask: the mask bank is empty but p_real + p_blob > 0")
        mask = bank[int(rng.integers(len(bank)))]
        if mask.shape[0] != size:
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        if draw < p_real:
            return mask.copy()
        if valid is None:
            raise ValueError("draw_training_mask: p_blob > 0 needs the valid region")
        return np.minimum(mask, blob_mask(rng, is_visible(mask) & valid))
    return free_form_mask(rng, size, max_strokes)


