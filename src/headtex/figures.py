"""Figures for people: a header band naming the columns of an image grid (train's samples, evaluate's figures)."""
from __future__ import annotations

import cv2
import numpy as np

BAND_COLOUR = (32, 32, 32)
TEXT_COLOUR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# The smallest text that stays legible: capitals 9 px tall under OpenCV 4.x, 11 px under 5.x (their text
# renderers differ; below this OpenCV 5's strokes fade to grey). Labels wrap or shorten instead of shrinking.
MIN_SCALE = 0.4
MAX_SCALE = 0.8
MAX_LINES = 3
SHORTENED = ".."
PADDING = 3  # px around each line, and kept free at each column's edges


def text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def shortened(text: str, width: int, scale: float) -> str:
    """text, or its longest prefix ending in '..' that fits width px."""
    if text_width(text, scale) <= width:
        return text
    while len(text) > 1 and text_width(text + SHORTENED, scale) > width:
        text = text[:-1]
    return text + SHORTENED


def label_lines(label: str, width: int, scale: float) -> list[str]:
    """The label's words in at most MAX_LINES lines that each fit width px; a word or a last line that
    cannot fit is shortened with '..'."""
    lines: list[str] = []
    for word in label.split():
        if lines and text_width(f"{lines[-1]} {word}", scale) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(shortened(word, width, scale))
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [shortened(" ".join(lines[MAX_LINES - 1:]), width, scale)]
    return lines or [""]


def header_scale(labels: list[str], width: int) -> float:
    """One text size per figure: the column's preferred size, lowered (not below MIN_SCALE) until every label
    fits on one line."""
    preferred = float(np.clip(width / 300, MIN_SCALE, MAX_SCALE))
    widest = max(text_width(label, 1.0) for label in labels) or 1
    return float(np.clip((width - 2 * PADDING) / widest, MIN_SCALE, preferred))


def with_header(grid: np.ndarray, labels: list[str]) -> np.ndarray:
    """The grid (uint8 RGB, len(labels) equally wide columns) below a dark band with each column's label
    centred over it: one text size for all, long labels wrapped onto more lines or shortened."""
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[2] != 3 or grid.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB grid, got {grid.dtype} {grid.shape}")
    width = grid.shape[1] // len(labels)
    if width * len(labels) != grid.shape[1]:
        raise ValueError(f"{grid.shape[1]} px do not split into {len(labels)} equal columns")
    scale = header_scale(labels, width)
    columns = [label_lines(label, width - 2 * PADDING, scale) for label in labels]
    (_, text_height), baseline = cv2.getTextSize("Hg", FONT, scale, 1)
    line_height = text_height + baseline + PADDING
    band = np.empty((PADDING + line_height * max(map(len, columns)), grid.shape[1], 3), dtype=np.uint8)
    band[:] = BAND_COLOUR
    for index, lines in enumerate(columns):
        for row, line in enumerate(lines):
            origin = (index * width + (width - text_width(line, scale)) // 2, PADDING + row * line_height + text_height)
            cv2.putText(band, line, origin, FONT, scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return np.vstack([band, grid])
