"""Evaluation core: region metrics, baselines and a stratified, deterministic mask assignment (no I/O)."""
from __future__ import annotations

import cv2
import numpy as np

from headtex.masking import missing_region
from headtex.metrics import region_psnr, region_ssim


def coverage(visible_mask: np.ndarray, valid: np.ndarray) -> float:
    """Share of the UV valid region that a mask leaves missing."""
    return float(missing_region(visible_mask, valid).sum() / max(valid.sum(), 1))


def bucket_of(share: float, edges: list[float]) -> int:
    """Index of the bucket [edges[i], edges[i+1]) holding a missing share."""
    return int(np.clip(np.searchsorted(edges, share, side="right") - 1, 0, len(edges) - 2))


def assign_masks(
    test_count: int, candidate_coverage: np.ndarray, edges: list[float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic mask per test texture, stratified so every bucket gets samples.

    Test texture i goes to bucket i mod B (B = buckets that have candidates), then
    draws one candidate of that bucket. Returns (candidate index, bucket) per texture.
    """
    buckets = np.array([bucket_of(c, edges) for c in candidate_coverage])
    available = [b for b in range(len(edges) - 1) if np.any(buckets == b)]
    if not available:
        raise ValueError("no candidate masks to evaluate with")
    rng = np.random.default_rng([seed, 7])
    chosen, chosen_bucket = np.empty(test_count, np.int64), np.empty(test_count, np.int64)
    for i in range(test_count):
        bucket = available[i % len(available)]
        chosen[i] = rng.choice(np.flatnonzero(buckets == bucket))
        chosen_bucket[i] = bucket
    return chosen, chosen_bucket


def region_scores(prediction: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """L1 (in [0, 1] units), PSNR (dB) and SSIM of uint8 RGB images, averaged over the region's texels."""
    if not region.any():
        return {"l1": 0.0, "psnr": float("inf"), "ssim": 1.0}
    l1 = float(np.abs(prediction[region].astype(np.float64) - truth[region].astype(np.float64)).mean() / 255.0)
    return {"l1": l1, "psnr": region_psnr(prediction, truth, region), "ssim": region_ssim(prediction, truth, region)}


def fill_opencv(texture: np.ndarray, region: np.ndarray, method: str, radius: int = 5) -> np.ndarray:
    """OpenCV inpainting (`telea` or `navier_stokes`) of the region only."""
    flag = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}[method]
    filled = cv2.inpaint(texture, region.astype(np.uint8) * 255, radius, flag)
    out = texture.copy()
    out[region] = filled[region]
    return out


def fill_mirror(texture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Fill a missing texel from its left/right mirror texel when that one is known, the rest with Telea.

    The UV layout puts the face's symmetry plane at u = 0.5, so column c mirrors column U-1-c.
    """
    mirrored_texture, mirrored_region = texture[:, ::-1], region[:, ::-1]
    from_mirror = region & ~mirrored_region
    out = texture.copy()
    out[from_mirror] = mirrored_texture[from_mirror]
    return fill_opencv(out, region & ~from_mirror, "telea")


def fill_mean(texture: np.ndarray, region: np.ndarray, mean_texture: np.ndarray) -> np.ndarray:
    """Fill the region with the mean training texture."""
    out = texture.copy()
    out[region] = mean_texture[region]
    return out


def masked_input(texture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """What a method sees: the texture with the region blanked (white, as in the thesis' figures)."""
    out = texture.copy()
    out[region] = 255
    return out
