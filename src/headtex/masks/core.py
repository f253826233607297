"""Masks core: held-out identities, the real occlusion-mask bank, free-form strokes (arrays only, no I/O).

Masks use the dataset convention: uint8, 255 = visible/known, 0 = missing (thesis figure 3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FREE_FORM_CANVAS = 256  # the DeepFillv2 port draws its strokes on a 256 px canvas
PICK_PURPOSE = 1  # rng purpose ids: which bank masks to keep when `count` is set ...
HISTOGRAM_PURPOSE = 2  # ... and the free-form sample behind the coverage histogram


@dataclass
class MasksParams:
    """The `masks:` section of params.yaml (uv_size is the shared `uv.size`)."""

    identities: int = 8  # held out from blend: the highest identity ids present in data/pafs
    count: int | None = None  # masks in the bank; None = every view of the held-out identities
    p_real: float = 0.8  # chance that training draws a bank mask rather than a free-form one
    max_strokes: int = 15  # free-form masks: 0..max_strokes strokes
    seed: int = 0
    histogram_samples: int = 1000  # free-form masks drawn for the coverage histogram in metrics/masks.json
    shard_size: int = 1024
    uv_size: int = 192

    def __post_init__(self) -> None:
        from headtex.io import UserError

        if self.identities < 1 or (self.count is not None and self.count < 1):
            raise UserError("params.yaml [masks]: identities and count must be >= 1 (count: null = all views)")
        if not 0.0 <= self.p_real <= 1.0:
            raise UserError("params.yaml [masks]: p_real must lie in [0, 1]")
        if self.max_strokes < 1 or self.shard_size < 1 or self.histogram_samples < 1:
            raise UserError("params.yaml [masks]: max_strokes, shard_size and histogram_samples must be >= 1")


def held_out_identities(identities: np.ndarray, count: int) -> np.ndarray:
    """The mask bank's identities: the `count` highest ids present. blend never uses them (train or test).

    Chosen by id, not by a random draw, so that masks and blend agree from the list of ids alone.
    """
    ids = np.unique(np.asarray(identities, dtype=np.int64))
    if not 0 < count < len(ids):
        raise ValueError(f"cannot hold out {count} of {len(ids)} identities for the mask bank (need 0 < count < identities)")
    return ids[len(ids) - count:]


def pick_bank(identity: np.ndarray, view: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Indices of the records that form the bank, in (identity, view) order: all, or `count` drawn without replacement."""
    order = np.lexsort((view, identity))
    if count is None:
        return order
    if count > len(order):
        raise ValueError(f"masks.count = {count} but the held-out identities have only {len(order)} views")
    chosen = np.random.default_rng([seed, 0, PICK_PURPOSE]).choice(len(order), size=count, replace=False)
    return order[np.sort(chosen)]


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


def draw_training_mask(
    rng: np.random.Generator, bank: np.ndarray, p_real: float = 0.8, size: int | None = None, max_strokes: int = 15,
) -> np.ndarray:
    """One training mask (size, size) uint8, 255 = visible: a bank mask with probability p_real, else free-form (thesis 3.4)."""
    size = size or (bank.shape[1] if len(bank) else None)
    if size is None:
        raise ValueError("draw_training_mask: give `size` when the bank is empty")
    if rng.random() < p_real:
        if len(bank) == 0:
            raise ValueError("draw_training_mask: the mask bank is empty but p_real > 0")
        mask = bank[int(rng.integers(len(bank)))]
        if mask.shape[0] != size:
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        return mask.copy()
    return free_form_mask(rng, size, max_strokes)


def missing_share(masks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per mask (N, U, U): the share of the UV valid region that is missing (0 = all visible)."""
    return ((masks == 0) & valid).sum(axis=(1, 2)) / max(int(valid.sum()), 1)


def coverage_histogram(shares: np.ndarray, bins: int = 10) -> dict:
    """Counts of missing shares in `bins` equal bins over [0, 1], plus mean and median."""
    counts, edges = np.histogram(shares, bins=bins, range=(0.0, 1.0))
    return {
        "bin_edges": [round(float(e), 3) for e in edges],
        "counts": [int(c) for c in counts],
        "mean": round(float(np.mean(shares)), 4) if len(shares) else None,
        "median": round(float(np.median(shares)), 4) if len(shares) else None,
    }


def mask_grid(masks: np.ndarray, columns: int = 8) -> np.ndarray:
    """Masks (N, U, U) tiled into one image with a 2 px grey gutter, for preview PNGs."""
    count, size = len(masks), masks.shape[1]
    rows = max(1, -(-count // columns))
    grid = np.full((rows * (size + 2), columns * (size + 2)), 128, dtype=np.uint8)
    for k, mask in enumerate(masks):
        r, c = divmod(k, columns)
        grid[r * (size + 2):r * (size + 2) + size, c * (size + 2):c * (size + 2) + size] = mask
    return grid
