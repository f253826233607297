"""`headtex evaluate`: the thesis' Table 4.1 plus quality by mask size against baselines."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from headtex.evaluate.core import (
    assign_masks, coverage, fill_mean, fill_mirror, fill_opencv, masked_input, missing_region, region_scores,
)
from headtex.io import UserError, write_json, write_png
from headtex.params import load_params, section
from headtex.train.cli import VGG_RANDOM_SEED, read_mask_bank, read_textures, read_valid

BASELINES = ("telea", "navier_stokes", "mirror", "mean_texture")


@dataclass
class EvaluateParams:
    bucket_edges: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 1.0])  # missing share of the head
    bucket_names: list[str] = field(default_factory=lambda: ["small", "medium", "large"])
    free_form_candidates: int = 300  # stroke masks offered next to the real bank (real masks rarely miss < 20 %)
    max_strokes: int = 15
    seed: int = 0
    figure_rows: int = 4
    batch_size: int = 8

    def __post_init__(self) -> None:
        if len(self.bucket_names) != len(self.bucket_edges) - 1:
            raise UserError("params.yaml [evaluate]: bucket_names needs one name per pair of bucket_edges")


def candidate_masks(masks_dir: Path, size: int, config: EvaluateParams) -> np.ndarray:
    """The real bank plus seeded free-form masks (255 = visible)."""
    from headtex.masks.core import free_form_mask

    bank = read_mask_bank(masks_dir, size)
    rng = np.random.default_rng([config.seed, 71])
    strokes = np.stack([free_form_mask(rng, size, max_strokes=config.max_strokes)
                        for _ in range(config.free_form_candidates)])
    return np.concatenate([bank, strokes])


@torch.no_grad()
def model_outputs(model_file: Path, textures: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                  vgg_weights: str | None, vgg_seed: int, batch_size: int) -> tuple[dict, dict, dict, float]:
    """One pass of the trained model over the test set.

    Returns the composited coarse and refined outputs (uint8), the five Table 4.1
    losses computed as training computes them (averaged over textures), model
    facts, and the seconds per texture of the shipped coarse inference.
    """
    from headtex.inpaint import Critic, VGG16Features, composite, critic_loss, generator_loss
    from headtex.train.core import hole_from_visible, to_image, to_uint8
    from headtex.train.files import load_inpainter

    generator, info = load_inpainter(model_file)
    if info["uv_size"] != textures.shape[1]:
        raise UserError(f"{model_file}: trained at uv size {info['uv_size']}, test textures are {textures.shape[1]}")
    critic_state = torch.load(model_file, map_location="cpu", weights_only=True).get("critic")
    critic = None
    if critic_state is not None:
        critic = Critic(info["latent"])
        critic.load_state_dict(critic_state)
        critic.eval()
    vgg = VGG16Features(vgg_weights, seed=vgg_seed)
    outputs = {"coarse": [], "refined": []}
    sums: dict[str, float] = {}
    coarse_seconds = 0.0
    for start in range(0, len(textures), batch_size):
        image = to_image(torch.from_numpy(textures[start:start + batch_size]))
        hole = torch.from_numpy(hole_from_visible(visible[start:start + batch_size], valid))[:, None]
        tick = time.perf_counter()
        coarse = generator.forward_coarse(image, hole)
        coarse_seconds += time.perf_counter() - tick
        refined = generator.forward_refine(image, hole, coarse)
        outputs["coarse"].append(to_uint8(composite(coarse, image, hole)))
        outputs["refined"].append(to_uint8(composite(refined, image, hole)))
        if critic is None:  # a model file without its critic: no D/GAN losses
            from headtex.inpaint import masked_l1, perceptual_loss

            first, first_missing = masked_l1(coarse, image, hole)
            second, second_missing = masked_l1(refined, image, hole)
            parts = {"first_mask_l1": first, "second_mask_l1": second, "first_mask_l1_missing": first_missing,
                     "second_mask_l1_missing": second_missing,
                     "perceptual": perceptual_loss(vgg, composite(refined, image, hole), image)}
        else:
            _, parts = generator_loss(coarse, refined, image, hole, critic, vgg)
            parts["d_loss"] = critic_loss(critic, image, composite(refined, image, hole), hole)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(image)
    losses = {key: round(value / len(textures), 6) for key, value in sorted(sums.items())}
    completed = {name: np.concatenate(batches) for name, batches in outputs.items()}
    # Known texels come back bit-exact (the float round trip could move them by one level).
    known = hole_from_visible(visible, valid) == 0
    for output in completed.values():
        output[known] = textures[known]
    return completed, losses, info, coarse_seconds / len(textures)


def run(params_path: Path, test_dir: Path, train_dir: Path, masks_dir: Path, valid_path: Path, model_file: Path,
        metrics_path: Path, timing_path: Path, figures_dir: Path, plot_path: Path) -> dict:
    params = load_params(params_path)
    config = section(params, "evaluate", EvaluateParams)
    train_section = params.get("train") or {}
    textures, _ = read_textures(test_dir)
    train_textures, _ = read_textures(train_dir)
    size = textures.shape[1]
    valid = read_valid(valid_path, size)
    candidates = candidate_masks(masks_dir, size, config)
    shares = np.array([coverage(mask, valid) for mask in candidates])
    chosen, buckets = assign_masks(len(textures), shares, config.bucket_edges, config.seed)
    visible = candidates[chosen]
    regions = np.stack([missing_region(mask, valid) for mask in visible])

    torch.manual_seed(config.seed)
    outputs, losses, info, seconds_per_texture = model_outputs(
        model_file, textures, visible, valid, train_section.get("vgg_weights"), VGG_RANDOM_SEED,
        config.batch_size)
    mean_texture = np.rint(train_textures.astype(np.float64).mean(0)).astype(np.uint8)
    masked = np.stack([masked_input(t, r) for t, r in zip(textures, regions)])
    outputs["telea"] = np.stack([fill_opencv(t, r, "telea") for t, r in zip(masked, regions)])
    outputs["navier_stokes"] = np.stack([fill_opencv(t, r, "navier_stokes") for t, r in zip(masked, regions)])
    outputs["mirror"] = np.stack([fill_mirror(t, r) for t, r in zip(masked, regions)])
    outputs["mean_texture"] = np.stack([fill_mean(t, r, mean_texture) for t, r in zip(masked, regions)])

    scores = {method: [region_scores(out[i], textures[i], regions[i]) for i in range(len(textures))]
              for method, out in outputs.items()}
    table: dict[str, dict] = {}
    for bucket_index, name in [(None, "overall")] + list(enumerate(config.bucket_names)):
        members = np.arange(len(textures)) if bucket_index is None else np.flatnonzero(buckets == bucket_index)
        table[name] = {"count": int(len(members))}
        for method in outputs:
            for key in ("l1", "psnr", "ssim"):
                values = np.array([scores[method][i][key] for i in members])
                finite = values[np.isfinite(values)]
                table[name].setdefault(method, {})[key] = round(float(finite.mean()), 4) if len(finite) else None
    shipped = info["ship_output"]
    verdict = {name: bool(table[name][shipped]["psnr"] is not None and table[name]["mirror"]["psnr"] is not None
                          and table[name][shipped]["psnr"] > table[name]["mirror"]["psnr"])
               for name in config.bucket_names if table[name]["count"]}
    metrics = {"table_4_1": losses, "by_bucket": table, "ship_output": shipped,
               "model_beats_mirror_fill": verdict, "test_textures": int(len(textures)),
               "vgg": "imagenet" if train_section.get("vgg_weights") else "random (fixed seed)",
               "mask_coverage_mean": round(float(shares[chosen].mean()), 4)}
    write_json(metrics_path, metrics)
    # Timing varies run to run, so it lives apart from eval.json (which must be identical for identical inputs).
    write_json(timing_path, {"inference_seconds_per_texture": round(seconds_per_texture, 4),
                             "textures": int(len(textures))})
    write_json(plot_path, {"psnr_by_bucket": [
        {"label": f"{name} (n={table[name]['count']}) / {method}", "bucket": name, "method": method,
         "psnr": table[name][method]["psnr"]}
        for name in config.bucket_names if table[name]["count"] for method in (shipped, *BASELINES)]})
    write_figures(figures_dir, config, textures, masked, outputs[shipped], outputs, buckets, table)
    return metrics


def write_figures(folder: Path, config: EvaluateParams, textures, masked, model_output, outputs, buckets, table) -> None:
    """Per bucket: rows of GT | masked | model | best baseline (thesis figures 4.1-4.3)."""
    for index, name in enumerate(config.bucket_names):
        members = np.flatnonzero(buckets == index)[: config.figure_rows]
        if not len(members):
            continue
        best = max(BASELINES, key=lambda m: table[name][m]["psnr"] or -np.inf)
        rows = [np.hstack([textures[i], masked[i], model_output[i], outputs[best][i]]) for i in members]
        write_png(Path(folder) / f"{name}.png", np.vstack(rows))
