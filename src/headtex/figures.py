"""Figures for people: a header band naming the columns of an image grid (train's samples, evaluate's figures)."""
from __future__ import annotations

import cv2
import numpy as np

BAND_COLOUR = (32, 32, 32)
TEXT_COLOUR = (255, 255, 255)


def with_header(grid: np.ndarray, labels: list[str]) -> np.ndarray:
    """The grid (uint8 RGB, len(labels) equally wide columns) below a dark band with one label per column,
    centred over it and shrunk to fit the column."""
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[2] != 3 or grid.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB grid, got {grid.dtype} {grid.shape}")
    width = grid.shape[1] // len(labels)
    if width * len(labels) != grid.shape[1]:
        raise ValueError(f"{grid.shape[1]} px do not split into {len(labels)} equal columns")
    height = max(14, min(32, width // 7))
    band = np.empty((height, grid.shape[1], 3), dtype=np.uint8)
    band[:] = BAND_COLOUR
    font = cv2.FONT_HERSHEY_SIMPLEX
    for index, label in enumerate(labels):
        scale = height / 40
        (text_width, text_height), _ = cv2.getTextSize(label, font, scale, 1)
        if text_width > width - 4:
            scale *= (width - 4) / text_width
            (text_width, text_height), _ = cv2.getTextSize(label, font, scale, 1)
        origin = (index * width + (width - text_width) // 2, (height + text_height) // 2)
        cv2.putText(band, label, origin, font, scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return np.vstack([band, grid])
