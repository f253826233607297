"""Header bands on image grids: every column named legibly at any column width, the grid itself untouched."""
import numpy as np
import pytest

from headtex.figures import BAND_COLOUR, MIN_SCALE, SHORTENED, label_lines, text_width, with_header

LABELS = ["ground truth", "masked", "model (coarse)", "best classical (navier_stokes)"]


@pytest.mark.parametrize("width", [32, 48, 64, 128, 256])
def test_header_names_every_column_legibly_and_keeps_the_grid(width):
    """Each column's label is bright (strokes reach 230, not faded grey) and stays inside its own column, the
    text is at least 9 px tall, and the grid below the band is unchanged. (OpenCV 5.1 once shrank a long
    label into grey strokes peaking at 172: illegible.)"""
    grid = np.full((2 * width, 4 * width, 3), 128, np.uint8)
    out = with_header(grid, LABELS)
    band = out.shape[0] - grid.shape[0]
    assert out.shape[1:] == grid.shape[1:]
    np.testing.assert_array_equal(out[band:], grid)
    for column in range(4):
        part = out[:band, column * width:(column + 1) * width].max(axis=2)
        assert (part > 230).any(), f"column {column} has no bright text at width {width}"
        assert not (part[:, [0, -1]] > 64).any()  # nothing drawn on a column's edges: no label runs into the next
        assert (out[:band, column * width:(column + 1) * width] == BAND_COLOUR).all(axis=2).mean() > 0.5
    line = np.flatnonzero((out[:band].max(axis=2) > 128).any(axis=1))
    assert line[-1] - line[0] + 1 >= 9  # tall enough to read (one line, or the whole wrapped label)


def test_long_labels_wrap_onto_lines_that_fit_before_they_are_shortened():
    lines = label_lines("best classical (navier_stokes)", 120, MIN_SCALE)
    assert lines == ["best classical", "(navier_stokes)"]
    assert all(text_width(line, MIN_SCALE) <= 120 for line in lines)
    cut = label_lines("best classical (navier_stokes)", 40, MIN_SCALE)
    assert cut[0] == "best" and any(line.endswith(SHORTENED) for line in cut)
    assert all(text_width(line, MIN_SCALE) <= 40 for line in cut)


def test_a_label_too_long_for_one_line_makes_the_band_taller():
    grid = np.zeros((10, 2 * 128, 3), np.uint8)
    short = with_header(grid, ["masked", "model"])
    wrapped = with_header(grid, ["masked", "best classical (navier_stokes) fill"])
    assert wrapped.shape[0] > short.shape[0]


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="equal columns"):
        with_header(np.zeros((10, 10, 3), np.uint8), ["a", "b", "c"])
    with pytest.raises(ValueError, match="uint8 RGB"):
        with_header(np.zeros((10, 10), np.uint8), ["a"])
