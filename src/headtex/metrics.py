"""Image-quality measures on a region of uint8 RGB textures, shared by pafs, blend and evaluate."""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def region_psnr(prediction: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB, peak 255) over the region's texels; inf for a perfect match, NaN for an empty region."""
    if not region.any():
        return float("nan")
    mse = float(np.mean((prediction[region].astype(np.float64) - truth[region].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def region_ssim(prediction: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Mean SSIM (skimage, 7×7 windows, averaged over channels) over the region's texels."""
    _, ssim_map = structural_similarity(truth, prediction, channel_axis=2, data_range=255, full=True)
    return float(ssim_map.mean(axis=2)[region].mean())
