"""Header bands on image grids: every column named, the grid itself untouched."""
import numpy as np
import pytest

from headtex.figures import BAND_COLOUR, with_header


def test_header_names_every_column_and_keeps_the_grid():
    grid = np.full((2 * 64, 4 * 64, 3), 128, np.uint8)
    out = with_header(grid, ["ground truth", "masked", "model (coarse)", "best classical (navier_stokes)"])
    band = out.shape[0] - grid.shape[0]
    assert band >= 14 and out.shape[1:] == grid.shape[1:]
    np.testing.assert_array_equal(out[band:], grid)
    for column in range(4):  # white text inside each column's part of the band
        part = out[:band, column * 64 + 1:(column + 1) * 64 - 1]
        assert (part > 200).all(axis=2).any() and (part == BAND_COLOUR).all(axis=2).mean() > 0.5


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="equal columns"):
        with_header(np.zeros((10, 10, 3), np.uint8), ["a", "b", "c"])
    with pytest.raises(ValueError, match="uint8 RGB"):
        with_header(np.zeros((10, 10), np.uint8), ["a"])
