"""inpaint.fills: the classical fills that evaluate scores and symres starts from."""
import numpy as np
import pytest

from headtex.inpaint.fills import fill_mean, fill_mirror, fill_opencv, fill_symmetric, masked_input


@pytest.fixture
def texture():
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(40, 220, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64x64, blocky


@pytest.fixture
def region():
    region = np.zeros((64, 64), bool)
    region[10:30, 5:25] = True
    return region


@pytest.mark.parametrize("method", ["telea", "navier_stokes", "mirror", "symmetric", "mean"])
def test_baselines_fill_only_the_missing_region(texture, region, method):
    masked = masked_input(texture, region)
    if method == "mirror":
        filled = fill_mirror(masked, region)
    elif method == "symmetric":
        filled = fill_symmetric(masked, region)
    elif method == "mean":
        filled = fill_mean(masked, region, np.full_like(texture, 77))
    else:
        filled = fill_opencv(masked, region, method)
    np.testing.assert_array_equal(filled[~region], texture[~region])
    assert not np.array_equal(filled[region], masked[region])


def test_mirror_fill_copies_the_mirrored_texel(texture, region):
    symmetric = np.concatenate([texture[:, :32], texture[:, :32][:, ::-1]], axis=1)
    filled = fill_mirror(masked_input(symmetric, region), region)
    np.testing.assert_array_equal(filled, symmetric)  # every missing texel's mirror is known here


def test_symmetric_fill_mirrors_where_it_can_and_navier_stokes_elsewhere(texture):
    """Where the mirror texel is missing too (a hole across u = 0.5) or off the head, Navier-Stokes fills."""
    region = np.zeros((64, 64), bool)
    region[20:40, 24:40] = True  # straddles the symmetry axis: columns 24-39 mirror onto 24-39
    region[5:10, 2:6] = True  # its mirror (columns 58-61) is known ...
    valid = np.ones((64, 64), bool)
    valid[5:10, 58:62] = False  # ... but off the head
    masked = masked_input(texture, region)
    filled = fill_symmetric(masked, region, valid)
    navier_stokes = fill_opencv(masked, region, "navier_stokes")
    np.testing.assert_array_equal(filled[20:40, 24:40], navier_stokes[20:40, 24:40])
    assert not np.array_equal(filled[5:10, 2:6], texture[:, ::-1][5:10, 2:6])  # not copied from off the head
    without_valid = fill_symmetric(masked, region)
    np.testing.assert_array_equal(without_valid[5:10, 2:6], texture[:, ::-1][5:10, 2:6])


def test_empty_region_is_a_copy(texture):
    region = np.zeros((64, 64), bool)
    for method in ("telea", "navier_stokes"):
        np.testing.assert_array_equal(fill_opencv(texture, region, method), texture)
