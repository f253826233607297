import numpy as np
import pytest

from headtex.masking import missing_region
from headtex.evaluate.core import (
    assign_masks, bucket_of, coverage, fill_mean, fill_mirror, fill_opencv, masked_input,
    region_scores,
)


@pytest.fixture
def texture():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(40, 220, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    return smooth  # 64x64, blocky but deterministic


@pytest.fixture
def region():
    region = np.zeros((64, 64), bool)
    region[10:30, 5:25] = True
    return region


def test_perfect_prediction_scores(texture, region):
    scores = region_scores(texture, texture, region)
    assert scores["l1"] == 0.0 and scores["psnr"] == float("inf") and scores["ssim"] == pytest.approx(1.0)


def test_known_corruption_scores(texture, region):
    corrupted = texture.astype(np.int16)
    corrupted[region] += 10
    corrupted = np.clip(corrupted, 0, 255).astype(np.uint8)
    changed = np.abs(corrupted.astype(int) - texture.astype(int))[region]
    scores = region_scores(corrupted, texture, region)
    assert scores["l1"] == pytest.approx(changed.mean() / 255.0)
    assert scores["psnr"] == pytest.approx(10 * np.log10(255**2 / (changed.astype(float) ** 2).mean()))
    assert scores["ssim"] < 1.0
    # Errors outside the region do not count.
    outside = texture.copy()
    outside[~region] = 0
    assert region_scores(outside, texture, region)["l1"] == 0.0


@pytest.mark.parametrize("method", ["telea", "navier_stokes", "mirror", "mean"])
def test_baselines_fill_only_the_missing_region(texture, region, method):
    masked = masked_input(texture, region)
    if method == "mirror":
        filled = fill_mirror(masked, region)
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


def test_coverage_counts_only_the_head():
    valid = np.zeros((10, 10), bool)
    valid[:, :5] = True
    mask = np.full((10, 10), 255, np.uint8)
    mask[:, 3:8] = 0
    assert coverage(mask, valid) == pytest.approx(0.4)
    assert (missing_region(mask, valid) == (valid & (mask == 0))).all()


def test_mask_assignment_is_stratified_and_deterministic():
    shares = np.array([0.1, 0.15, 0.3, 0.35, 0.6, 0.7, 0.8])
    edges = [0.0, 0.2, 0.4, 1.0]
    chosen, buckets = assign_masks(9, shares, edges, seed=3)
    assert set(buckets) == {0, 1, 2} and np.bincount(buckets).min() == 3
    assert all(bucket_of(shares[c], edges) == b for c, b in zip(chosen, buckets))
    again, _ = assign_masks(9, shares, edges, seed=3)
    np.testing.assert_array_equal(chosen, again)
