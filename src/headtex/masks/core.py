"""Masks core: the real occlusion-mask bank and its coverage statistics (arrays only, no I/O).

Masks use the dataset convention: uint8, 255 = visible/known, 0 = missing (thesis figure 3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headtex.params import param

PICK_PURPOSE = 1  # rng purpose ids: which bank masks to keep when `count` is set ...
HISTOGRAM_PURPOSE = 2  # ... and the free-form sample behind the coverage histogram


@dataclass
class MasksParams:
    """The `masks:` section of params.yaml (uv_size is the shared `uv.size`)."""

    identities: int = param("held out from blend: the highest identity ids in data/pafs", ge=1)
    count: int | None = param("masks in the bank; null = every view of the held-out identities", ge=1)
    p_real: float = param("training draws a bank mask with this probability, else a free-form one", ge=0, le=1)
    max_strokes: int = param("free-form masks: 0..max_strokes strokes", ge=1)
    seed: int = param("which bank masks to keep (with count) and the histogram sample")
    histogram_samples: int = param("free-form masks drawn for the coverage histogram in metrics/masks.json", ge=1)
    shard_size: int = param("masks per shard (whole identities)", ge=1)
    uv_size: int = param("texture side in texels", shared="uv.size")


def pick_bank(identity: np.ndarray, view: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Indices of the records that form the bank, in (identity, view) order: all, or `count` drawn without replacement."""
    order = np.lexsort((view, identity))
    if count is None:
        return order
    if count > len(order):
        raise ValueError(f"masks.count = {count} but the held-out identities have only {len(order)} views")
    chosen = np.random.default_rng([seed, 0, PICK_PURPOSE]).choice(len(order), size=count, replace=False)
    return order[np.sort(chosen)]


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
