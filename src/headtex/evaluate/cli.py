"""`headtex evaluate`: the thesis' Table 4.1 plus quality by mask size against baselines."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headtex.evaluate.core import MASK_KINDS, assign_masks, bootstrap_mean, coverage, region_scores
from headtex.datasets import read_mask_bank, read_textures, read_valid
from headtex.inpaint.fills import fill_mean, fill_mirror, fill_opencv, fill_poisson_mirror, masked_input
from headtex.inpaint import VGG16Features, composite, critic_loss, generator_loss, masked_l1, perceptual_loss
from headtex.masking import free_form_mask, missing_region
from headtex.inpaint.model import load_critic, load_inpainter, prepare_batch, restore_known, to_uint8
from headtex.figures import with_header
from headtex.io import UserError, write_json, write_png
from headtex.params import load_params, param, section

BASELINES = ("telea", "navier_stokes", "mirror", "mirror_poisson", "mean_texture")
CANDIDATE_PURPOSE = 71  # rng purpose of the free-form candidate masks


@dataclass
class EvaluateParams:
    """The `evaluate:` section (thesis 4.2-4.3), plus `train.vgg_weights` for the perceptual loss."""

    bucket_edges: list[float] = param("share of the head (UV valid region) missing: bucket edges", ge=0, le=1)
    bucket_names: list[str] = param("one name per bucket")
    free_form_candidates: int = param("seeded stroke masks offered beside the real bank", ge=0)
    max_strokes: int = param("strokes per free-form candidate", ge=1)
    masks_per_texture: int = param("stratified masks drawn per test texture (real bank and free-form in turn)", ge=1)
    bootstrap_resamples: int = param("resamples of the test textures for the 95 % intervals", ge=100)
    seed: int = param("the deterministic, stratified mask draw per test texture and the bootstrap")
    figure_rows: int = param("examples per bucket figure (GT | masked | model | best baseline)", ge=1)
    batch_size: int = param("inference batch", ge=1)
    vgg_weights: str | None = param("the perceptual loss' VGG-16 (as training used)", shared="train.vgg_weights")
    deterministic: bool = param("CPU: PyTorch's own convolutions (oneDNN's vary in the last bits run to run)",
                                shared="train.deterministic")

    def __post_init__(self) -> None:
        if len(self.bucket_names) != len(self.bucket_edges) - 1:
            raise ValueError("bucket_names needs one name per pair of bucket_edges")


def candidate_masks(masks_dir: Path, size: int, config: EvaluateParams) -> tuple[np.ndarray, np.ndarray]:
    """The real bank plus seeded free-form masks (255 = visible), and each one's kind (index into MASK_KINDS)."""
    bank = read_mask_bank(masks_dir, size)
    rng = np.random.default_rng([config.seed, CANDIDATE_PURPOSE])
    strokes = np.array([free_form_mask(rng, size, max_strokes=config.max_strokes)
                        for _ in range(config.free_form_candidates)], dtype=np.uint8).reshape(-1, size, size)
    kinds = np.repeat([MASK_KINDS.index("real"), MASK_KINDS.index("free_form")], [len(bank), len(strokes)])
    return np.concatenate([bank, strokes]), kinds


@torch.no_grad()
def model_outputs(model_file: Path, textures: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                  vgg_weights: str | None, batch_size: int, deterministic: bool = True) -> tuple[dict, dict, dict, float]:
    """One pass of the trained model over the test set.

    Returns the composited coarse and refined outputs (uint8, known texels bit-exact), the five
    Table 4.1 losses computed as training computes them (averaged over textures, with training's
    VGG), model facts, and the seconds per texture of the coarse inference.
    """
    torch.backends.mkldnn.enabled = not deterministic  # CPU only; eval.json must repeat byte for byte
    generator, info = load_inpainter(model_file)
    if info["uv_size"] != textures.shape[1]:
        raise UserError(f"{model_file}: trained at uv size {info['uv_size']}, test textures are {textures.shape[1]}")
    critic = load_critic(model_file, info["latent"])
    vgg = VGG16Features(vgg_weights)
    outputs = {"coarse": [], "refined": []}
    sums: dict[str, float] = {}
    coarse_seconds = 0.0
    for start in range(0, len(textures), batch_size):
        batch = slice(start, start + batch_size)
        image, hole = prepare_batch(textures[batch], visible[batch], valid)
        tick = time.perf_counter()
        coarse = generator.forward_coarse(image, hole)
        coarse_seconds += time.perf_counter() - tick
        refined = generator.forward_refine(image, hole, coarse)
        outputs["coarse"].append(to_uint8(composite(coarse, image, hole)))
        outputs["refined"].append(to_uint8(composite(refined, image, hole)))
        for key, value in table_4_1_losses(coarse, refined, image, hole, critic, vgg).items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(image)
    losses = {key: round(value / len(textures), 6) for key, value in sorted(sums.items())}
    completed = {name: restore_known(np.concatenate(batches), textures, visible, valid)
                 for name, batches in outputs.items()}
    return completed, losses, info, coarse_seconds / len(textures)


def table_4_1_losses(coarse: torch.Tensor, refined: torch.Tensor, image: torch.Tensor, hole: torch.Tensor,
                     critic: torch.nn.Module | None, vgg: VGG16Features) -> dict[str, torch.Tensor]:
    """The thesis' Table 4.1 losses of one batch, as training computes them (no D/GAN without a saved critic)."""
    if critic is None:
        first, first_missing = masked_l1(coarse, image, hole)
        second, second_missing = masked_l1(refined, image, hole)
        return {"first_mask_l1": first, "second_mask_l1": second, "first_mask_l1_missing": first_missing,
                "second_mask_l1_missing": second_missing,
                "perceptual": perceptual_loss(vgg, composite(refined, image, hole), image)}
    _, parts = generator_loss(coarse, refined, image, hole, critic, vgg)
    parts["d_loss"] = critic_loss(critic, image, composite(refined, image, hole), hole)
    return parts


def run(params_path: Path, test_dir: Path, train_dir: Path, masks_dir: Path, valid_path: Path, model_file: Path,
        metrics_path: Path, timing_path: Path, figures_dir: Path, plot_path: Path) -> dict:
    params = load_params(params_path)
    config = section(params, "evaluate", EvaluateParams)
    textures, _ = read_textures(test_dir)
    train_textures, _ = read_textures(train_dir)
    size = textures.shape[1]
    valid = read_valid(valid_path, size)
    candidates, candidate_kinds = candidate_masks(masks_dir, size, config)
    shares = np.array([coverage(mask, valid) for mask in candidates])
    # Every test texture gets masks_per_texture draws; from here on each draw is one sample (texture, mask).
    owner, chosen, buckets, kinds = assign_masks(len(textures), shares, candidate_kinds, config.bucket_edges,
                                                 config.masks_per_texture, config.seed)
    truth, visible = textures[owner], candidates[chosen]
    regions = np.stack([missing_region(mask, valid) for mask in visible])

    torch.manual_seed(config.seed)
    outputs, losses, info, seconds_per_texture = model_outputs(model_file, truth, visible, valid, config.vgg_weights,
                                                               config.batch_size, config.deterministic)
    mean_texture = np.rint(train_textures.astype(np.float64).mean(0)).astype(np.uint8)
    masked = np.stack([masked_input(t, r) for t, r in zip(truth, regions)])
    outputs["telea"] = np.stack([fill_opencv(t, r, "telea") for t, r in zip(masked, regions)])
    outputs["navier_stokes"] = np.stack([fill_opencv(t, r, "navier_stokes") for t, r in zip(masked, regions)])
    outputs["mirror"] = np.stack([fill_mirror(t, r) for t, r in zip(masked, regions)])
    # symres' starting point (its output at initialisation): Poisson fill guided by the mirrored texture
    outputs["mirror_poisson"] = np.stack([fill_poisson_mirror(t, r) for t, r in zip(masked, regions)])
    outputs["mean_texture"] = np.stack([fill_mean(t, r, mean_texture) for t, r in zip(masked, regions)])

    scores = {method: score_arrays([region_scores(out[i], truth[i], regions[i]) for i in range(len(truth))])
              for method, out in outputs.items()}
    groups = [(None, "overall")] + list(enumerate(config.bucket_names))
    everything = np.ones(len(truth), bool)

    def table_of(members: np.ndarray) -> dict:
        return group_table(members, owner, scores, config)

    table = {name: table_of(everything if b is None else buckets == b) for b, name in groups}
    by_kind = {kind: {name: table_of((kinds == k) & (everything if b is None else buckets == b)) for b, name in groups}
               for k, kind in enumerate(MASK_KINDS)}
    shipped = info["ship_output"]
    verdict = {name: bool(table[name][shipped]["psnr"] is not None and table[name]["mirror"]["psnr"] is not None
                          and table[name][shipped]["psnr"] > table[name]["mirror"]["psnr"])
               for name in config.bucket_names if table[name]["count"]}
    gain = {}
    for b, name in groups:
        members = everything if b is None else buckets == b
        if members.any():
            mean, low, high = bootstrap_mean(scores[shipped]["psnr"][members] - scores["mirror"]["psnr"][members],
                                             owner[members], config.bootstrap_resamples, config.seed)
            gain[name] = {key: None if value is None else round(value, 4)
                          for key, value in (("mean", mean), ("low", low), ("high", high))}
    metrics = {"table_4_1": losses, "by_bucket": table, "by_kind": by_kind, "ship_output": shipped,
               "model_beats_mirror_fill": verdict, "model_minus_mirror_fill_psnr_db": gain,
               "test_textures": int(len(textures)), "masks_per_texture": config.masks_per_texture,
               "samples": int(len(truth)),
               "interval": f"95 % percentile bootstrap over test textures ({config.bootstrap_resamples} resamples, "
                           "each texture with all its masks; seed evaluate.seed)",
               "vgg": "imagenet" if config.vgg_weights else "random (fixed seed)",
               "mask_coverage_mean": round(float(shares[chosen].mean()), 4)}
    write_json(metrics_path, metrics)
    # Timing varies run to run, so it lives apart from eval.json (which must be identical for identical inputs).
    write_json(timing_path, {"inference_seconds_per_texture": round(seconds_per_texture, 4),
                             "textures": int(len(textures)), "completed": int(len(truth))})
    # Every method per bucket, the shipped output first (dvc.yaml draws them as bars grouped by bucket).
    methods = [shipped, *[m for m in outputs if m not in (shipped, *BASELINES)], *BASELINES]
    write_json(plot_path, {"psnr_by_bucket": [
        {"bucket": f"{name} (n={table[name]['count']})", "method": method, "psnr": table[name][method]["psnr"],
         **dict(zip(("low", "high"), table[name][method]["interval_95"]["psnr"] or (None, None)))}
        for name in config.bucket_names if table[name]["count"] for method in methods]})
    write_figures(figures_dir, config, truth, masked, outputs[shipped], outputs, buckets, table, shipped)
    return metrics


def score_arrays(per_draw: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """{metric: one score per draw} from region_scores' dicts."""
    return {key: np.array([scores[key] for scores in per_draw], dtype=np.float64) for key in ("l1", "psnr", "ssim")}


def group_table(members: np.ndarray, owner: np.ndarray, scores: dict[str, dict[str, np.ndarray]],
                config: EvaluateParams) -> dict:
    """One group of draws (a bucket, a kind): draws and textures counted; per method and metric the mean over
    the draws and its 95 % bootstrap interval over textures (None where nothing is scored)."""
    textures = owner[members]
    table: dict = {"count": int(members.sum()), "textures": int(len(np.unique(textures)))}
    for method, metrics in scores.items():
        entry: dict = {}
        interval: dict = {}
        for key, values in metrics.items():
            mean, low, high = bootstrap_mean(values[members], textures, config.bootstrap_resamples, config.seed)
            entry[key] = None if mean is None else round(mean, 4)
            interval[key] = None if mean is None else [round(low, 4), round(high, 4)]
        table[method] = {**entry, "interval_95": interval}
    return table


def write_figures(folder: Path, config: EvaluateParams, textures, masked, model_output, outputs, buckets, table,
                  shipped: str) -> None:
    """Per bucket: rows of GT | masked | model | best baseline (thesis figures 4.1-4.3), under a header naming them."""
    for index, name in enumerate(config.bucket_names):
        members = np.flatnonzero(buckets == index)[: config.figure_rows]
        if not len(members):
            continue
        best = max(BASELINES, key=lambda m: table[name][m]["psnr"] or -np.inf)
        rows = [np.hstack([textures[i], masked[i], model_output[i], outputs[best][i]]) for i in members]
        labels = ["ground truth", "masked", f"model ({shipped})", f"best classical ({best})"]
        write_png(Path(folder) / f"{name}.png", with_header(np.vstack(rows), labels))
