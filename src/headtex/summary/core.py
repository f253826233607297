"""The headline numbers of one pipeline run, from the stages' own metrics (dicts in, dict out).

A dozen numbers that tell the story of an experiment, with short names that no other metrics file uses
(so `dvc exp show` and `dvc metrics diff` name them without a file prefix):

- the data: `ids` identities kept by pafs, `hog_rate` dlib HOG's detection rate on the synthetic views
  (|yaw| <= 45), `nme` the fitted landmarks' NME (|yaw| <= 35), `paf_db` PAF PSNR (median, visible texels),
  `blend_db` the blended textures' PSNR against the truth (mean, the method used), `test_n` test textures;
- completion on the missing region (evaluate): `model_db` / `model_ssim` of the shipped output and
  `fill_db` / `fill_ssim` of the best classical fill (`best_fill` names it), overall and per mask-size
  bucket (`model_db_<bucket>`, `fill_db_<bucket>`, `model_ssim_<bucket>`, `fill_ssim_<bucket>`; the best fill
  chosen per bucket), and `gap_db` = model_db - fill_db (> 0: the model beats every classical fill);
- real photos (reconstruct): `photos_ok` the share of photos written, `photo_px` their median landmark
  residual (px).

A number the run does not have (no ground truth with `faces.source: directory`) is null.
"""
from __future__ import annotations

import statistics
from typing import Any

CLASSICAL_FILLS = ("telea", "navier_stokes", "mirror", "mirror_poisson", "mean_texture")  # evaluate's baselines
SUMMARY_KEYS = ("ids", "hog_rate", "nme", "paf_db", "blend_db", "test_n", "model_db", "model_ssim", "fill_db",
                "fill_ssim", "best_fill", "gap_db", "photos_ok", "photo_px")


def _get(data: dict, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _round(value: Any, digits: int) -> Any:
    return None if value is None else round(float(value), digits)


def best_fill(scores: dict[str, dict]) -> str | None:
    """The classical fill with the highest PSNR among those scored; None for an empty bucket (no samples)."""
    present = [name for name in CLASSICAL_FILLS if isinstance(scores.get(name), dict)]
    if not present:
        raise ValueError("no classical fill scored")
    scored = [name for name in present if scores[name].get("psnr") is not None]
    return max(scored, key=lambda name: scores[name]["psnr"]) if scored else None


def _score(scores: dict, method: str | None, metric: str, digits: int) -> float | None:
    return None if method is None else _round(scores[method][metric], digits)


def summarise(faces: dict, pafs: dict, blend: dict, evaluation: dict, reconstruction: dict) -> dict:
    """The headline metrics (SUMMARY_KEYS, then the per-bucket ones) from the stages' metrics dicts."""
    fidelity = blend.get("fidelity")
    buckets = evaluation["by_bucket"]
    shipped = evaluation["ship_output"]
    overall = buckets["overall"]
    fill = best_fill(overall)
    summary = {
        "ids": pafs.get("identities_kept"),
        "hog_rate": _round(faces.get("hog_detection_rate_abs_yaw_le_45", faces.get("hog_detection_rate_all_views")), 4),
        "nme": _round(_get(pafs, "fidelity", "by_abs_yaw", "abs_yaw_le_35", "nme_fitted_mean"), 4),
        "paf_db": _round(_get(pafs, "fidelity", "paf_psnr_db_median"), 2),
        "blend_db": _round(_get(fidelity, blend.get("method"), "psnr_db", "mean"), 2),
        "test_n": evaluation.get("test_textures"),
        "model_db": _score(overall, shipped, "psnr", 2),
        "model_ssim": _score(overall, shipped, "ssim", 3),
        "fill_db": _score(overall, fill, "psnr", 2),
        "fill_ssim": _score(overall, fill, "ssim", 3),
        "best_fill": fill,
    }
    summary["gap_db"] = (None if summary["model_db"] is None or summary["fill_db"] is None
                         else _round(overall[shipped]["psnr"] - overall[fill]["psnr"], 2))
    photos, written = reconstruction.get("photos"), reconstruction.get("written")
    residuals = [p["landmark_residual_px"] for p in (reconstruction.get("per_photo") or {}).values()]
    summary["photos_ok"] = _round(written / photos, 3) if photos else None
    summary["photo_px"] = _round(statistics.median(residuals), 2) if residuals else None
    for name, scores in buckets.items():
        if name == "overall" or not isinstance(scores, dict) or shipped not in scores:
            continue
        fill = best_fill(scores)  # None: no sample fell in this bucket
        summary[f"model_db_{name}"] = _score(scores, shipped, "psnr", 2)
        summary[f"fill_db_{name}"] = _score(scores, fill, "psnr", 2)
        summary[f"model_ssim_{name}"] = _score(scores, shipped, "ssim", 3)
        summary[f"fill_ssim_{name}"] = _score(scores, fill, "ssim", 3)
    return summary
