"""`headtex pafs`: data/faces -> per view PAF + visibility + landmarks + fit -> data/pafs/, metrics/pafs.json."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from headtex.datasets import FACES, ShardWriter, iter_shards, read_index, write_index
from headtex.facemesh import load_correspondence
from headtex.fitting import (DenseAssets, JawRegion, TexelGrid, dense_assets, fitted_landmarks, jaw_region, landmark_nme,
                             texel_grid)
from headtex.geometry.template import Template, load_template
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.masking import is_visible
from headtex.metrics import region_psnr
from headtex.pafs.core import PafsParams, process_views
from headtex.params import load_params, section
from headtex.pool import cached_per_folder, open_executor

YAW_BUCKETS = (15.0, 35.0, 50.0)  # fidelity figures for |yaw| <= each bucket (cumulative)
REJECTION_MAX_ABS_YAW = 45.0  # the rejection target covers |yaw| <= 45 deg
PREVIEW_TILE = 128
MAX_LISTED = 50  # no-face lines kept in metrics/pafs.json (all of them go to the log)
FACES_KEYS = ("images", "identity", "view", "yaw")
FACES_TRUTH_KEYS = FACES_KEYS + ("pitch", "roll", "landmarks", "lit_texture", "shape", "identity_ids")
OUTPUT_KEYS = ("identity", "view", "paf", "visible", "landmarks", "rotation", "pose", "scale", "translation", "shape",
               "view_cosine")


@cached_per_folder
def _assets(template_dir: str, texel_strides: tuple[int, ...], dense: bool
            ) -> tuple[Template, JawRegion, list[TexelGrid], DenseAssets | None]:
    """The template, its jaw region, the photometric refinement's texels per level and (dense fit or person mask) the face
    mesh's points on the template and its models, made once per worker process and per version of the template's
    files."""
    template = load_template(Path(template_dir))
    assets = dense_assets(template, load_correspondence(Path(template_dir))) if dense else None
    return template, jaw_region(template), [texel_grid(template, stride) for stride in texel_strides], assets


def _face_third(size: int) -> np.ndarray:
    """Texels of the UV layout's middle third (the face), where the landmarks constrain the fit."""
    u = (np.arange(size) + 0.5) / size
    return np.broadcast_to((u > 1 / 3) & (u < 2 / 3), (size, size))


def _process_identity(task: tuple[str, PafsParams, dict]) -> dict:
    """All views of one identity: per-view outputs, or the views with no face; plus fidelity rows with truth."""
    template_dir, config, item = task
    template, jaw, grids, dense = _assets(template_dir, tuple(config.photometric_texel_strides),
                                          config.dense or config.person_mask)
    fidelity = []
    started, cpu_started = time.perf_counter(), time.process_time()
    has_truth = "lit_texture" in item
    results = process_views(item["images"], template, config, jaw, grids, dense)
    found = [index for index, result in enumerate(results) if result is not None]
    missing = [index for index, result in enumerate(results) if result is None]
    views = [results[index] for index in found]
    fallbacks = sum(result.detector != config.detector for result in views)
    if has_truth:
        fidelity = [_fidelity_row(item, index, result, template) for index, result in zip(found, views)]
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    common = dict(seconds=seconds, cpu_seconds=cpu_seconds, fidelity=fidelity, fallbacks=fallbacks)
    if missing:
        return dict(missing=missing, **common)
    return dict(missing=[], arrays=_arrays(item, views), **common)


def _fidelity_row(item: dict, index: int, result, template: Template) -> dict:
    """One view's figures against the synthetic truth."""
    truth = item["landmarks"][index]
    seen = is_visible(result.visible) & template.texel_valid
    return dict(
        yaw=float(item["yaw"][index]),
        yaw_error=float(result.fit.pose[0] - item["yaw"][index]),
        pitch_error=float(result.fit.pose[1] - item["pitch"][index]),
        roll_error=float(result.fit.pose[2] - item["roll"][index]),
        nme_detected=float(landmark_nme(result.landmarks, truth)),
        nme_fitted=float(landmark_nme(fitted_landmarks(template, result.fit), truth)),
        psnr=region_psnr(result.paf, item["lit_texture"], seen),
        psnr_face=region_psnr(result.paf, item["lit_texture"], seen & _face_third(seen.shape[0])),
        visible_fraction=float(seen.sum() / max(1, template.texel_valid.sum())),
        shape_error=float(np.sqrt(np.mean((result.fit.shape - item["shape"]) ** 2))),
        shape_truth=float(np.sqrt(np.mean(item["shape"] ** 2))),
        residual_px=result.fit.residual,
    )


def _arrays(item: dict, views: list) -> dict[str, np.ndarray]:
    """The stage's outputs for one identity's views."""
    fits = [v.fit for v in views]
    arrays = dict(
        identity=np.full(len(views), item["identity"], dtype=np.int64),
        view=item["view"].astype(np.int16),
        paf=np.stack([v.paf for v in views]),
        visible=np.stack([v.visible for v in views]),
        landmarks=np.stack([v.landmarks for v in views]).astype(np.float32),
        rotation=np.stack([f.rotation for f in fits]).astype(np.float32),
        pose=np.stack([f.pose for f in fits]).astype(np.float32),
        scale=np.array([f.scale for f in fits], dtype=np.float32),
        translation=np.stack([f.translation for f in fits]).astype(np.float32),
        shape=np.stack([f.shape for f in fits]).astype(np.float32),
        view_cosine=np.stack([v.view_cosine for v in views]),
    )
    return arrays


def _identity_items(arrays: dict[str, np.ndarray], has_truth: bool) -> list[dict]:
    """Split a faces shard (flattened by view) into one item per identity, in shard order."""
    items = []
    for identity in dict.fromkeys(arrays["identity"].tolist()):
        rows = np.flatnonzero(arrays["identity"] == identity)
        item = dict(identity=int(identity), view=arrays["view"][rows], images=arrays["images"][rows],
                    yaw=arrays["yaw"][rows])
        if has_truth:
            slot = int(np.flatnonzero(arrays["identity_ids"] == identity)[0])
            item.update(pitch=arrays["pitch"][rows], roll=arrays["roll"][rows], landmarks=arrays["landmarks"][rows],
                        lit_texture=arrays["lit_texture"][slot], shape=arrays["shape"][slot])
        items.append(item)
    return items


def preview(images: np.ndarray, arrays: dict[str, np.ndarray], truth_landmarks: np.ndarray | None) -> np.ndarray:
    """One row per view: image | detected landmarks (green; truth in red) | PAF | visibility mask."""
    rows = []
    for index, image in enumerate(images):
        scale = PREVIEW_TILE / image.shape[0]
        tile = cv2.resize(image, (PREVIEW_TILE, PREVIEW_TILE), interpolation=cv2.INTER_AREA)
        marked = tile.copy()
        groups = [((255, 0, 0), truth_landmarks[index])] if truth_landmarks is not None else []
        for colour, points in groups + [((0, 255, 0), arrays["landmarks"][index])]:
            for x, y in np.rint(points * scale).astype(int):
                cv2.circle(marked, (int(x), int(y)), 1, colour, -1)
        paf = cv2.resize(arrays["paf"][index], (PREVIEW_TILE, PREVIEW_TILE), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(arrays["visible"][index], (PREVIEW_TILE, PREVIEW_TILE), interpolation=cv2.INTER_NEAREST)
        rows.append(np.hstack([tile, marked, paf, np.repeat(mask[..., None], 3, axis=2)]))
    return np.vstack(rows)


def _summary(values: list[float], statistic=np.median, digits: int = 4) -> float | None:
    values = [v for v in values if np.isfinite(v)]
    return round(float(statistic(values)), digits) if values else None


def fidelity_metrics(rows: list[dict]) -> dict:
    """Landmark NME, pose errors, PAF PSNR and coverage against the synthetic ground truth, by |yaw| bucket."""
    by_bucket = {}
    for bucket in YAW_BUCKETS:
        chosen = [r for r in rows if abs(r["yaw"]) <= bucket]
        by_bucket[f"abs_yaw_le_{bucket:g}"] = {
            "views": len(chosen),
            "nme_fitted_mean": _summary([r["nme_fitted"] for r in chosen], np.mean),
            "nme_detected_mean": _summary([r["nme_detected"] for r in chosen], np.mean),
            "yaw_error_degrees_median": _summary([abs(r["yaw_error"]) for r in chosen], digits=2),
            "paf_psnr_db_median": _summary([r["psnr"] for r in chosen], digits=2),
        }
    per_yaw = {}
    for yaw in sorted({r["yaw"] for r in rows}):
        chosen = [r for r in rows if r["yaw"] == yaw]
        per_yaw[f"{yaw:g}"] = {
            "nme_fitted_mean": _summary([r["nme_fitted"] for r in chosen], np.mean),
            "yaw_error_degrees_mean": _summary([r["yaw_error"] for r in chosen], np.mean, 2),
            "paf_psnr_db_median": _summary([r["psnr"] for r in chosen], digits=2),
            "visible_fraction_mean": _summary([r["visible_fraction"] for r in chosen], np.mean, 3),
        }
    return {
        "views": len(rows),
        "nme_definition": "mean point error / distance of the true outer eye corners (36, 45), 68 points; "
                          "fitted = the template's annotated landmark vertices through the fit, detected = dlib",
        "by_abs_yaw": by_bucket,
        "by_yaw": per_yaw,
        "yaw_error_degrees_median": _summary([abs(r["yaw_error"]) for r in rows], digits=2),
        "pitch_error_degrees_median": _summary([abs(r["pitch_error"]) for r in rows], digits=2),
        "roll_error_degrees_median": _summary([abs(r["roll_error"]) for r in rows], digits=2),
        "paf_psnr_db_median": _summary([r["psnr"] for r in rows], digits=2),
        "paf_psnr_db_mean": _summary([r["psnr"] for r in rows], np.mean, 2),
        "paf_psnr_face_third_db_median": _summary([r["psnr_face"] for r in rows], digits=2),
        "visible_fraction_mean": _summary([r["visible_fraction"] for r in rows], np.mean, 3),
        "shape_rms_error": _summary([r["shape_error"] for r in rows], np.mean, 3),
        "shape_rms_error_of_mean_shape": _summary([r["shape_truth"] for r in rows], np.mean, 3),  # the baseline
        "landmark_residual_px_median": _summary([r["residual_px"] for r in rows], digits=2),
    }


def _check_inputs(config: PafsParams, index: dict, faces_dir: Path, template: Template, template_dir: Path) -> bool:
    """Whether the faces carry ground truth; UserError when the template or the truth has another uv.size."""
    if template.texel_triangle.shape[0] != config.uv_size:
        raise UserError(f"{template_dir}: template built for uv.size {template.texel_triangle.shape[0]}, "
                        f"params.yaml says {config.uv_size}; rebuild it (`headtex template`)")
    has_truth = bool(index.get("has_truth"))
    if has_truth and index.get("uv_size") != config.uv_size:
        raise UserError(f"{faces_dir}/index.json: ground truth at uv_size {index.get('uv_size')}, "
                        f"params.yaml says {config.uv_size}; rerun `headtex faces`")
    return has_truth


def _no_face_lines(item: dict, missing: list[int]) -> list[tuple[float, str]]:
    """(yaw, log line) for each view of an identity where no face was found."""
    lines = []
    for index in missing:
        yaw = float(item["yaw"][index])
        lines.append((yaw, f"identity {item['identity']} view {int(item['view'][index])}"
                           + ("" if np.isnan(yaw) else f" (yaw {yaw:g})") + ": no face found"))
    return lines


def pafs_metrics(config: PafsParams, views_in: int, views_out: int, yaws: np.ndarray, kept: int,
                 rejected: list[int], no_face: list[tuple[float, str]], fallbacks: int, fidelity: list[dict]) -> dict:
    """metrics/pafs.json: counts, no-face rates, and fidelity against the ground truth where there is one."""
    identities_in = kept + len(rejected)
    metrics = {
        "detector": config.detector,
        "fallback_detector": config.fallback_detector,
        "views_found_by_fallback": fallbacks,
        "contour": config.contour,
        "identities_in": identities_in,
        "identities_kept": kept,
        "identities_rejected": len(rejected),
        "identity_rejection_rate": round(len(rejected) / max(1, identities_in), 4),
        "views_in": views_in,
        "views_out": views_out,
        "views_no_face": len(no_face),
        "view_no_face_rate": round(len(no_face) / max(1, views_in), 4),
        "no_face_lines": [line for _, line in no_face][:MAX_LISTED],
    }
    within = np.abs(yaws) <= REJECTION_MAX_ABS_YAW
    if within.any():
        missed_within = sum(1 for yaw, _ in no_face if abs(yaw) <= REJECTION_MAX_ABS_YAW)
        metrics["view_no_face_rate_abs_yaw_le_45"] = round(missed_within / int(within.sum()), 4)
    if fidelity:
        metrics["fidelity"] = fidelity_metrics(fidelity)
    return metrics


def run(params_path: Path, faces_dir: Path, template_dir: Path, out: Path, metrics_path: Path,
        workers: int | None = None, timing_path: Path | None = None) -> dict:
    """The pafs stage: writes out/ (shards, index.json, preview/) and metrics_path; returns the metrics
    plus `log_lines` (one line per view with no face, for the log)."""
    started = time.perf_counter()
    config = section(load_params(params_path), "pafs", PafsParams)
    workers = workers if workers and workers > 0 else config.workers
    index = read_index(faces_dir, FACES)
    has_truth = _check_inputs(config, index, faces_dir, load_template(template_dir), template_dir)

    views_in, yaws, rejected, no_face, fidelity = 0, [], [], [], []
    work = {"seconds": 0.0, "cpu_seconds": 0.0, "fallbacks": 0}
    with open_executor(workers, "pafs") as executor, atomic_dir(out) as staging:
        writer = ShardWriter(staging, config.shard_size)
        previews = 0
        # One stream of tasks across the faces shards, so that a cluster stays busy at shard boundaries; the items
        # in flight wait here (a shard read at a time, then only the executor's window).
        in_flight: deque[dict] = deque()

        template = str(Path(template_dir).resolve())  # absolute: a cluster worker runs elsewhere

        def tasks() -> Iterator[tuple[str, PafsParams, dict]]:
            for _, arrays in iter_shards(faces_dir, FACES, FACES_TRUTH_KEYS if has_truth else FACES_KEYS):
                for item in _identity_items(arrays, has_truth):
                    in_flight.append(item)
                    yield template, config, item

        identities = sum(len(entry["identities"]) for entry in index["shards"])
        for result in executor.map(_process_identity, tasks(), "pafs", total=identities):
            item = in_flight.popleft()
            views_in += len(item["view"])
            yaws.extend(item["yaw"].tolist())
            for key in work:
                work[key] += result[key]
            fidelity.extend(result["fidelity"])
            if result["missing"]:
                rejected.append(item["identity"])
                no_face.extend(_no_face_lines(item, result["missing"]))
                continue
            writer.add({key: result["arrays"][key] for key in OUTPUT_KEYS})
            if previews < config.preview_identities:
                truth = item["landmarks"] if has_truth else None
                write_png(staging / "preview" / f"identity-{item['identity']:05d}.png",
                          preview(item["images"], result["arrays"], truth))
                previews += 1
        writer.flush()
        stage_seconds = time.perf_counter() - started
        kept = [i for entry in writer.entries for i in entry["identities"]]
        facts = {key: index[key] for key in ("source", "image_size", "yaw_degrees", "views_per_identity", "names")
                 if key in index}
        write_index(staging, writer.entries, uv_size=config.uv_size, has_truth=has_truth, identities=len(kept),
                    views=writer.count, rejected_identities=rejected, **facts)

    metrics = pafs_metrics(config, views_in, writer.count, np.array(yaws, dtype=np.float64), len(kept), rejected,
                           no_face, work["fallbacks"], fidelity if has_truth else [])
    metrics["joint_fit"] = config.joint_fit
    metrics["dense"] = config.dense
    metrics["person_mask"] = config.person_mask
    write_json(metrics_path, metrics)
    timing = {
        **executor.facts(),
        "seconds": round(time.perf_counter() - started, 2),
        "images_per_second": round(views_in / max(stage_seconds, 1e-9), 2),
        # CPU time too: on a shared machine the wall time measures the neighbours as much as this stage.
        "worker_ms_per_image": round(1000 * work["seconds"] / max(1, views_in), 1),
        "worker_cpu_ms_per_image": round(1000 * work["cpu_seconds"] / max(1, views_in), 1),
    }
    if timing_path is not None:
        write_json(timing_path, timing)
    return {**metrics, **timing, "log_lines": [line for _, line in no_face]}
