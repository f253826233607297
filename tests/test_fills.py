"""inpaint.fills: the classical fills that evaluate scores and symres starts from."""
import numpy as np
import pytest

from headtex.inpaint.fills import fill_mean, fill_mirror, fill_opencv, fill_poisson_mirror, masked_input


@pytest.fixture
def texture():
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(40, 220, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64x64, blocky


@pytest.fixture
def region():
    region = np.zeros((64, 64), bool)
    region[10:30, 5:25] = True
    return region


@pytest.mark.parametrize("method", ["telea", "navier_stokes", "mirror", "poisson_mirror", "mean"])
def test_baselines_fill_only_the_missing_region(texture, region, method):
    masked = masked_input(texture, region)
    if method == "mirror":
        filled = fill_mirror(masked, region)
    elif method == "poisson_mirror":
        filled = fill_poisson_mirror(masked, region)
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


def test_poisson_mirror_fill_keeps_the_mirrors_detail_relit_to_the_border():
    """A texture symmetric up to a brightness step between its halves (light from one side): the mirror fill
    copies the wrong brightness, the Poisson fill takes the mirror's gradients and this side's level."""
    rng = np.random.default_rng(1)
    half = rng.integers(60, 160, (64, 32, 3)).astype(np.int16)
    texture = np.concatenate([half + 40, half[:, ::-1]], axis=1).astype(np.uint8)  # left half 40 levels brighter
    region = np.zeros((64, 64), bool)
    region[20:40, 6:20] = True  # on the bright side; its mirror is known
    masked = masked_input(texture, region)
    poisson = fill_poisson_mirror(masked, region)
    mirror = fill_mirror(masked, region)
    np.testing.assert_array_equal(poisson[~region], texture[~region])
    error = np.abs(poisson[region].astype(int) - texture[region]).mean()
    assert error < 1.0 < np.abs(mirror[region].astype(int) - texture[region]).mean() - 30


def test_poisson_fill_without_a_mirror_is_smooth_and_any_hole_has_a_solution(texture):
    region = np.zeros((64, 64), bool)
    region[20:40, 24:40] = True  # straddles the symmetry axis: no mirror texel known, a membrane fill
    filled = fill_poisson_mirror(masked_input(texture, region), region)
    border = np.concatenate([texture[19, 24:40], texture[40, 24:40], texture[20:40, 23], texture[20:40, 40]])
    assert (filled[region] >= border.min(0)).all() and (filled[region] <= border.max(0)).all()  # maximum principle
    everything = np.ones((64, 64), bool)
    assert fill_poisson_mirror(texture, everything).shape == texture.shape  # no known texel: no crash


def test_empty_region_is_a_copy(texture):
    region = np.zeros((64, 64), bool)
    for method in ("telea", "navier_stokes"):
        np.testing.assert_array_equal(fill_opencv(texture, region, method), texture)
