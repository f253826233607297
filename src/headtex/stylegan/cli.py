"""`headtex stylegan`: MobileStyleGAN's IR fetched from the random-face wheel, its mean style, and a yaw direction
in its style space fitted on generated people -> models/stylegan/, metrics/stylegan.json."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from headtex.fitting import image_fit
from headtex.generator import MEAN_FILE, POSE_FILE, Generator, fetch_ir, latent, mean_style, truncate
from headtex.geometry.template import Template, load_template
from headtex.io import atomic_dir, save_npz, write_json, write_png
from headtex.params import load_params, section
from headtex.pool import cached_per_folder, open_executor
from headtex.stylegan.core import StyleganParams, fit_pose_direction

POSE_IMAGE_SIZE = 512  # the pose samples are fitted at this size (dlib's HOG finds every generated face here)
POSE_PURPOSE = 1  # latents of the pose samples: default_rng([seed, sample, POSE_PURPOSE]); the faces stage uses 0
PREVIEW_PEOPLE = 4
PREVIEW_STEPS = (-6.0, -3.0, 0.0, 3.0, 6.0)  # sigmas along the direction
PREVIEW_TILE = 192


@cached_per_folder
def _generator(folder: str) -> Generator:
    return Generator(Path(folder), threads=1)


@cached_per_folder
def _template(folder: str) -> Template:
    return load_template(Path(folder))


def _pose_sample(task: tuple[str, str, np.ndarray, int, int, float]) -> tuple[np.ndarray, float]:
    """(style, fitted yaw) of one generated person."""
    ir_dir, template_dir, mean, seed, sample, truncation = task
    generator = _generator(ir_dir)
    style = truncate(generator.styles(latent(seed, sample, POSE_PURPOSE)[None]), mean, truncation)
    image = generator.images(style, POSE_IMAGE_SIZE)[0]
    fitted = image_fit(_template(template_dir), image)  # our own yaw estimate: dlib's landmarks, the template fit
    return style[0], float("nan") if fitted is None else float(fitted[0].pose[0])


def run(params_path: Path, template_dir: Path, out: Path, metrics_path: Path, workers: int = 0,
        timing_path: Path | None = None, source: Path | None = None) -> dict:
    started = time.perf_counter()
    config = section(load_params(params_path), "stylegan", StyleganParams)
    with atomic_dir(out) as staging:
        wheel = source or (Path(config.source) if config.source else None)
        fetch_ir(staging, wheel)
        generator = Generator(staging, threads=1)
        tick = time.perf_counter()
        mean = mean_style(generator, config.mean_samples, config.seed)
        mean_seconds = time.perf_counter() - tick
        np.save(staging / MEAN_FILE, mean)

        tick = time.perf_counter()
        tasks = [(str(Path(staging).resolve()), str(Path(template_dir).resolve()), mean, config.seed, sample,
                  config.pose_truncation) for sample in range(config.pose_samples)]
        with open_executor(workers, "stylegan") as executor:
            results = list(executor.map(_pose_sample, tasks, "stylegan: pose samples"))
            facts = executor.facts()
        pose_seconds = time.perf_counter() - tick
        styles = np.stack([style for style, _ in results])
        yaws = np.array([yaw for _, yaw in results])
        found = np.isfinite(yaws)
        pose = fit_pose_direction(styles[found], mean, yaws[found], config.pose_ridge, config.seed)
        save_npz(staging / POSE_FILE, **pose.arrays(), sample_yaws=yaws.astype(np.float32))

        people = np.stack([truncate(generator.styles(latent(config.seed, i, POSE_PURPOSE)[None]), mean,
                                    config.pose_truncation)[0] for i in range(PREVIEW_PEOPLE)])
        rows = [np.hstack(list(generator.images(np.stack([style + step * pose.sigma * pose.direction
                                                          for step in PREVIEW_STEPS]), PREVIEW_TILE)))
                for style in people]
        write_png(staging / "preview.png", np.vstack(rows))

    metrics = {"pose_samples": config.pose_samples, "faces_found": int(found.sum()),
               "sample_yaw_degrees": {"min": round(float(np.nanmin(yaws)), 2), "median": round(float(np.nanmedian(yaws)), 2),
                                      "max": round(float(np.nanmax(yaws)), 2), "std": round(float(np.nanstd(yaws)), 2)},
               "r2": round(pose.r2, 4), "r2_cross_validated": round(pose.r2_cv, 4),
               "predicted_degrees_per_sigma": round(pose.degrees_per_unit * pose.sigma, 3),
               "preview_steps_sigma": list(PREVIEW_STEPS)}
    write_json(metrics_path, metrics)
    timing = {**facts, "seconds": round(time.perf_counter() - started, 2), "mean_style_seconds": round(mean_seconds, 2),
              "pose_seconds": round(pose_seconds, 2),
              "pose_samples_per_second": round(config.pose_samples / pose_seconds, 2)}
    if timing_path is not None:
        write_json(timing_path, timing)
    return {**metrics, **timing}
