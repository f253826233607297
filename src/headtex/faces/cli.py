"""`headtex faces`: synthetic identities (a folder of real photos, or EigenGAN's people) -> data/faces/ shards, preview,
metrics/faces.json."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headtex.datasets import FACES, ShardWriter, read_shard, write_index
from headtex.detection import detect_faces, find_face
from headtex.faces.core import (
    FacesParams, RenderedIdentity, Regions, appearance_regions, preview_grid, render_identity, sample_identity,
)
from headtex.geometry.template import Template, load_template
from headtex.identity import DESCRIPTOR_SIZE, face_descriptor, identity_report
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.params import load_params, section
from headtex.photos import make_square, read_photo
from headtex.pool import default_workers, parallel_map, tune_worker_process

PREVIEW_IDENTITIES = 8
PREVIEW_TILE = 128
DETECTION_MAX_ABS_YAW = 45.0  # the detection check covers the views dlib's frontal HOG detector is meant for
DETECTION_CHUNK = 16  # images per detection task
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_LISTED = 50  # problem lines kept in metrics/faces.json (all of them go to the log)
EIGENGAN_CHUNK = 32  # eigengan identities generated, then checked, at a time (bounds memory)
IDENTITY_SIDE_YAWS = (-35.0, 35.0)  # issue 14: each identity's yaw-0 view against its views nearest these


@functools.lru_cache(maxsize=2)
def _assets(template_dir: str) -> tuple[Template, Regions, Regions]:
    """The template and its appearance regions, loaded once per process (pool workers are tuned by parallel_map)."""
    template = load_template(Path(template_dir))
    regions = appearance_regions(template.albedo_render, template.render_texel_triangle >= 0,
                                 template.vertex_uv[template.landmark_ids])
    return template, regions, regions.resized(template.albedo.shape[0])


def _synthetic_identity(task: tuple[str, FacesParams, int]) -> tuple[RenderedIdentity, int, bool]:
    """(the rendered identity, how many times its shape and light were redrawn, whether HOG finds every view at
    |yaw| <= DETECTION_MAX_ABS_YAW)."""
    template_dir, config, identity = task
    template, render_regions, uv_regions = _assets(template_dir)
    checked = [view for view, yaw in enumerate(config.yaw_degrees) if abs(yaw) <= DETECTION_MAX_ABS_YAW]
    checked.sort(key=lambda view: -abs(config.yaw_degrees[view]))  # the likeliest miss (largest |yaw|) first: stop at it
    for attempt in range(config.hog_resample_attempts + 1):
        sample = sample_identity(config, identity, template.basis_names, attempt)
        rendered = render_identity(template, render_regions, uv_regions, sample, config.image_size, config.supersample)
        if config.hog_resample_attempts == 0:
            return rendered, 0, True
        found = all(len(detect_faces(rendered.images[view], "hog", 1)) > 0 for view in checked)
        if found:
            break
    return rendered, attempt, found


@dataclass
class IngestedIdentity:
    """One folder of photos: the usable views, their file names, and what was wrong or converted."""

    images: list[np.ndarray] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "path: problem", the file was not used
    conversions: list[str] = field(default_factory=list)  # "path: converted ...", the file was used


def _ingest_identity(task: tuple[str, list[str], FacesParams]) -> IngestedIdentity:
    folder, names, config = task
    result = IngestedIdentity()
    for name in names:
        path = Path(folder) / name
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            result.problems.append(f"{path}: not a .png/.jpg file; ignored")
            continue
        try:
            photo, conversions = read_photo(path, tuple(config.alpha_background))
        except UserError as error:
            result.problems.append(str(error))  # "path: problem"
            continue
        image, squared = make_square(photo, config.image_size, config.square, tuple(config.alpha_background))
        conversions += squared
        result.images.append(image)
        result.files.append(name)
        if conversions:
            result.conversions.append(f"{path}: converted ({', '.join(conversions)})")
    if not result.images:
        result.problems.append(f"{folder}: no usable view; identity skipped")
    return result


def _detect_chunk(task: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray | bool]:
    """dlib HOG (upsample 1) on each image: whether a face is found, or the largest face's 68 landmarks
    where `want_landmarks` asks for them (the landmark predictor costs extra)."""
    images, want_landmarks = task
    found = []
    for image, landmarks in zip(images, want_landmarks):
        if landmarks:
            detection = find_face(image, [("hog", 1)])
            found.append(False if detection is None else detection.landmarks.astype(np.float32))
        else:
            found.append(len(detect_faces(image, "hog", 1)) > 0)
    return found


def _record(identity: int, images: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray,
            landmarks: np.ndarray, **truth: np.ndarray) -> dict[str, np.ndarray]:
    views = len(images)
    return dict(images=images, identity=np.full(views, identity, np.int64), view=np.arange(views, dtype=np.int16),
                yaw=yaw.astype(np.float32), pitch=pitch.astype(np.float32), roll=roll.astype(np.float32),
                landmarks=landmarks.astype(np.float32), **truth)


def _generate_synthetic(config: FacesParams, template_dir: Path, writer: ShardWriter,
                        workers: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Render every identity into shards; returns the preview identities' views and lit textures, and the
    counts of hog_resample_attempts."""
    tasks = [(str(template_dir), config, identity) for identity in range(config.identities)]
    preview_views, preview_textures = [], []
    resample = dict(attempts=config.hog_resample_attempts, resampled_identities=0, redraws=0, unresolved_identities=[])
    for identity, (rendered, redraws, found) in enumerate(parallel_map(_synthetic_identity, tasks, workers, "faces")):
        resample["resampled_identities"] += redraws > 0
        resample["redraws"] += redraws
        if not found:
            resample["unresolved_identities"].append(identity)
        writer.add(_record(identity, rendered.images, rendered.yaw, rendered.pitch, rendered.roll, rendered.landmarks,
                           lit_texture=rendered.lit_texture, shape=rendered.shape))
        if identity < PREVIEW_IDENTITIES:
            preview_views.append(rendered.images)
            preview_textures.append(rendered.lit_texture)
    writer.flush()
    return preview_views, preview_textures, resample


def list_directory(root: Path) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """(identity folder, its entry names sorted) for every sub-folder of root, sorted by name; and the
    problem lines for entries of root that are not folders (hidden entries are skipped everywhere)."""
    if not root.is_dir():
        raise UserError(f"{root}: faces.dir is not a folder (expected one sub-folder of photos per identity)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise UserError(f"{root}: no identity sub-folders (expected one sub-folder of photos per identity)")
    stray = [f"{p}: not inside an identity sub-folder; ignored" for p in entries if not p.is_dir()]
    return [(folder, sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))) for folder in folders], stray


def _ingest_directory(config: FacesParams, writer: ShardWriter, workers: int) -> dict:
    """Read every identity folder into shards; returns names, problems, conversions and the preview views."""
    listing, problems = list_directory(Path(config.dir))
    tasks = [(str(folder), names, config) for folder, names in listing]
    names, conversions, preview_views, view_counts = {}, [], [], []
    for (folder, _), ingested in zip(listing, parallel_map(_ingest_identity, tasks, workers, "faces")):
        problems += ingested.problems
        conversions += ingested.conversions
        if not ingested.images:
            continue
        identity = len(names)
        views = len(ingested.images)
        nan = np.full(views, np.nan, np.float32)
        writer.add(_record(identity, np.stack(ingested.images), nan, nan, nan, np.full((views, 68, 2), np.nan, np.float32)))
        names[identity] = {"folder": folder.name, "files": ingested.files}
        view_counts.append(views)
        if identity < PREVIEW_IDENTITIES:
            preview_views.append(np.stack(ingested.images))
    writer.flush()
    if not names:
        raise UserError(f"{config.dir}: no usable photo in any identity folder ({len(problems)} problems, first: {problems[0]})")
    return dict(names=names, problems=problems, conversions=conversions, preview_views=preview_views,
                view_counts=view_counts)


def _check_eigengan_identity(task: tuple[np.ndarray, int]) -> object:
    """dlib's verdict (eigengan.Checked) on one identity's views: (images, centre view)."""
    from headtex.faces import eigengan

    return eigengan.check_identity(*task)


def eigengan_source(config: FacesParams, writer: ShardWriter, workers: int) -> dict:
    """EigenGAN identities into shards: one latent each, its views along the pose dimension; identities that dlib
    does not find in every view or sees turn into another person are dropped (no ground truth, NaN pose)."""
    from headtex.faces import eigengan  # torch is imported only by this source

    generator = eigengan.load_generator(Path(config.eigengan_weights))
    pose = eigengan.pose_dimension(generator, config.eigengan_pose)
    positions = eigengan.traversal_positions(config.yaw_degrees, config.eigengan_pose_range)
    centre = eigengan.centre_view(positions, config.eigengan_pose_range)
    views = len(positions)
    nan, kept_ids, dropped, distances, preview_views = np.full(views, np.nan, np.float32), [], [], [], []
    for start in range(0, config.identities, EIGENGAN_CHUNK):
        ids = range(start, min(start + EIGENGAN_CHUNK, config.identities))
        # Generated here (torch uses every core), checked by dlib in the workers.
        batch = [eigengan.generate_views(generator, eigengan.identity_latents(generator.arch, config.seed, i,
                                                                               config.eigengan_truncation),
                                         pose, positions, config.image_size) for i in ids]
        checks = parallel_map(_check_eigengan_identity, [(images, centre) for images in batch], workers, "faces: eigengan")
        for latent_id, images, checked in zip(ids, batch, checks):
            distances += checked.distances
            if not checked.kept:
                dropped.append(f"identity {latent_id}: {checked.reason}")
                continue
            writer.add(_record(len(kept_ids), images, nan, nan, nan, np.full((views, 68, 2), np.nan, np.float32)))
            kept_ids.append(latent_id)
            if len(preview_views) < PREVIEW_IDENTITIES:
                preview_views.append(images)
    writer.flush()
    other = sum("another person" in line for line in dropped)
    check = {"pose_dimension": list(pose), "generated": config.identities, "kept": len(kept_ids),
             "dropped_no_face": len(dropped) - other, "dropped_other_person": other, "same_person_threshold": eigengan.SAME_PERSON,
             "median_view_distance_to_centre": round(float(np.median(distances)), 4) if distances else None,
             "dropped_lines": dropped[:MAX_LISTED]}
    facts = dict(source="eigengan", views_per_identity=views, has_truth=False, identities=len(kept_ids),
                 latent_ids=kept_ids, pose_dimension=list(pose), pose_positions=[round(float(p), 4) for p in positions],
                 centre_view=centre, yaw_degrees_requested=[float(y) for y in config.yaw_degrees])
    return dict(problems=[], conversions=[], preview_views=preview_views, facts=facts, eigengan_check=check,
                log=[f"eigengan: {len(kept_ids)} of {config.identities} identities kept ({len(dropped) - other} "
                     f"without a face in every view, {other} turning into another person)"] + dropped)


def detection_check(folder: Path, entries: list[dict], check_identities: int, max_abs_yaw: float | None,
                    workers: int) -> dict:
    """dlib HOG face-found rate over the views of the first identities (|yaw| <= max_abs_yaw where the pose is known).

    Also compares dlib's landmarks with the true projected ones at yaw 0 (synthetic).
    """
    found = checked = 0
    missed, errors = [], []
    for entry in entries:
        if not any(i < check_identities for i in entry["identities"]):
            continue
        shard = read_shard(folder, entry, FACES, ("images", "identity", "view", "yaw", "landmarks"))
        chosen = shard["identity"] < check_identities
        if max_abs_yaw is not None:
            chosen &= np.abs(shard["yaw"]) <= max_abs_yaw
        rows = np.flatnonzero(chosen)
        truth = np.isfinite(shard["landmarks"][rows]).all(axis=(1, 2)) & (shard["yaw"][rows] == 0.0)
        if checked == 0 and len(rows):
            find_face(shard["images"][rows[0]], [("hog", 1)])  # load dlib's models here: forked workers share them
        chunks = [(shard["images"][rows[i:i + DETECTION_CHUNK]], truth[i:i + DETECTION_CHUNK])
                  for i in range(0, len(rows), DETECTION_CHUNK)]
        results = [result for chunk in parallel_map(_detect_chunk, chunks, workers, "faces: dlib check")
                   for result in chunk]
        for row, result in zip(rows, results):
            checked += 1
            identity, view, yaw = int(shard["identity"][row]), int(shard["view"][row]), float(shard["yaw"][row])
            if result is False:
                missed.append(f"identity {identity} view {view} (yaw {yaw:g}): no face found")
                continue
            found += 1
            if result is not True:
                # Inner landmarks (17-67): dlib's jaw points follow the silhouette, not the mesh's jaw line.
                errors.append(np.linalg.norm(result[17:] - shard["landmarks"][row][17:], axis=1).mean())
    report = {"checked_views": checked, "found": found, "rate": round(found / checked, 4) if checked else None,
              "missed": missed}
    if errors:
        report["landmark_error_px_yaw0"] = {"mean": round(float(np.mean(errors)), 2),
                                            "max": round(float(np.max(errors)), 2), "views": len(errors)}
    return report


def _describe(images: np.ndarray) -> np.ndarray:
    """dlib face descriptors (N,128) of some images (detected faces; NaN rows where none is found)."""
    found = [face_descriptor(image) for image in images]
    return np.stack([np.full(DESCRIPTOR_SIZE, np.nan, np.float32) if d is None else d for d in found])


def identity_check(folder: Path, entries: list[dict], check_identities: int, max_pairs: int | None,
                   workers: int) -> dict:
    """Issue 14's measure: are the identities different people to dlib's face recogniser, and each one person?

    Synthetic: the yaw-0 view (the one nearest 0) of each of the first identities against the other identities'
    (pairs, up to max_pairs) and against its own views nearest -35 and +35 degrees. Directory (no poses): the
    first view of each identity, pairs only.
    """
    frontal_rows, side_rows = [], []
    for entry in entries:
        if not any(i < check_identities for i in entry["identities"]):
            continue
        shard = read_shard(folder, entry, FACES, ("images", "identity", "yaw"))
        for identity in np.unique(shard["identity"][shard["identity"] < check_identities]):
            rows = np.flatnonzero(shard["identity"] == identity)
            yaw = shard["yaw"][rows]
            if np.isfinite(yaw).all():
                frontal_rows.append(shard["images"][rows[np.argmin(np.abs(yaw))]])
                side_rows.append([shard["images"][rows[np.argmin(np.abs(yaw - side))]] for side in IDENTITY_SIDE_YAWS])
            else:
                frontal_rows.append(shard["images"][rows[0]])
    if not frontal_rows:
        return {"identities": 0}
    images = np.stack(frontal_rows + [image for sides in side_rows for image in sides])
    chunks = [images[i:i + DETECTION_CHUNK] for i in range(0, len(images), DETECTION_CHUNK)]
    descriptors = np.concatenate(list(parallel_map(_describe, chunks, workers, "faces: identity check")))
    count = len(frontal_rows)
    sides = descriptors[count:].reshape(len(side_rows), len(IDENTITY_SIDE_YAWS), DESCRIPTOR_SIZE) if side_rows else None
    report = identity_report(descriptors[:count], sides if sides is not None else np.full((count, 0, DESCRIPTOR_SIZE), np.nan),
                             max_pairs)
    if sides is None or len(side_rows) != count:
        report = {k: v for k, v in report.items() if k not in ("median_within_distance", "share_identities_consistent")}
    else:
        report["side_yaws"] = list(IDENTITY_SIDE_YAWS)
    return report


def _checked_template(template_dir: Path, config: FacesParams) -> Template:
    """The template, loaded before the pool forks (workers inherit it), checked against the params."""
    template = _assets(str(template_dir))[0]
    if template.albedo.shape[0] != config.uv_size:
        raise UserError(f"{template_dir}: template built for uv.size {template.albedo.shape[0]}, params.yaml "
                        f"says {config.uv_size}; rebuild it (`headtex template`)")
    unknown = sorted(set(config.shape_std_scale) - set(template.basis_names))
    if unknown:
        raise UserError(f"params.yaml: faces.shape_std_scale names unknown shape modes {unknown}; "
                        f"the template has {template.basis_names}")
    return template


def faces_metrics(config: FacesParams, identities: int, images: int, ingest: dict, check: int, detection: dict,
                  identity: dict) -> dict:
    """metrics/faces.json: counts, bad inputs and conversions, the dlib detection check and the identity check."""
    metrics = {
        "source": config.source,
        "identities": identities,
        "images": images,
        "bad_inputs": len(ingest["problems"]),
        "bad_input_lines": ingest["problems"][:MAX_LISTED],
        "converted": len(ingest["conversions"]),
        "converted_lines": ingest["conversions"][:MAX_LISTED],
        "detection_check_identities": check,
        "hog_missed_views": detection["missed"][:MAX_LISTED],
    }
    rate_key = "hog_detection_rate_abs_yaw_le_45" if config.source == "synthetic" else "hog_detection_rate_all_views"
    metrics[rate_key] = detection["rate"]
    metrics["hog_checked_views"] = detection["checked_views"]
    if "landmark_error_px_yaw0" in detection:
        metrics["dlib_vs_true_inner_landmarks_px_yaw0"] = detection["landmark_error_px_yaw0"]
    metrics["identity_check"] = identity
    return metrics


def run(params_path: Path, template_dir: Path, out: Path, metrics_path: Path, workers: int = 0,
        timing_path: Path | None = None) -> dict:
    """The faces stage: writes out/ (shards, index.json, preview/) and metrics_path.

    Returns the metrics plus `log_lines`: every bad-input and conversion line, for the log.
    """
    started = time.perf_counter()
    config = section(load_params(params_path), "faces", FacesParams)
    workers = workers if workers and workers > 0 else default_workers()
    tune_worker_process()  # before any OpenCV work here: its thread pool must not exist when the pool forks
    synthetic = config.source == "synthetic"
    template = _checked_template(template_dir, config) if synthetic else None

    with atomic_dir(out) as staging:
        writer = ShardWriter(staging, config.shard_size, per_identity=("lit_texture", "shape"))
        tick = time.perf_counter()
        if synthetic:
            preview_views, preview_textures, resample = _generate_synthetic(config, template_dir, writer, workers)
            views = len(config.yaw_degrees)
            facts = dict(source="synthetic", yaw_degrees=[float(y) for y in config.yaw_degrees], views_per_identity=views,
                         has_truth=True, shape_names=template.basis_names, identities=config.identities)
            ingest = dict(problems=[], conversions=[], hog_resample=resample)
        elif config.source == "eigengan":
            ingest = eigengan_source(config, writer, workers)
            preview_views, preview_textures = ingest["preview_views"], None
            facts = ingest["facts"]
        else:
            ingest = _ingest_directory(config, writer, workers)
            preview_views, preview_textures = ingest["preview_views"], None
            counts = ingest["view_counts"]
            facts = dict(source="directory", views_per_identity=counts[0] if len(set(counts)) == 1 else None,
                         view_counts=counts, has_truth=False, names=ingest["names"], identities=len(counts))
        generate_seconds = time.perf_counter() - tick
        images = sum(entry["count"] for entry in writer.entries)

        tick = time.perf_counter()
        check = config.detection_check_identities
        check = facts["identities"] if check is None else min(check, facts["identities"])
        detection = detection_check(staging, writer.entries, check, DETECTION_MAX_ABS_YAW if synthetic else None, workers)
        detection_seconds = time.perf_counter() - tick

        tick = time.perf_counter()
        cap = config.identity_check_identities
        cap = facts["identities"] if cap is None else min(cap, facts["identities"])
        identity = identity_check(staging, writer.entries, cap, config.identity_max_pairs, workers)
        identity_seconds = time.perf_counter() - tick

        if preview_views:  # none when the eigengan check kept no identity
            write_png(staging / "preview" / "grid.png", preview_grid(preview_views, PREVIEW_TILE, preview_textures))
        write_index(staging, writer.entries, image_size=config.image_size, uv_size=config.uv_size, images=images, **facts)

    metrics = faces_metrics(config, facts["identities"], images, ingest, check, detection, identity)
    if "eigengan_check" in ingest:
        metrics["eigengan_identity_check"] = ingest["eigengan_check"]
    if "hog_resample" in ingest:
        metrics["hog_resample"] = {**ingest["hog_resample"],
                                   "unresolved_identities": ingest["hog_resample"]["unresolved_identities"][:MAX_LISTED]}
    write_json(metrics_path, metrics)
    timing = {"workers": workers, "seconds": round(time.perf_counter() - started, 2),
              "generate_seconds": round(generate_seconds, 2), "images_per_second": round(images / generate_seconds, 2),
              "detection_seconds": round(detection_seconds, 2), "identity_check_seconds": round(identity_seconds, 2)}
    if timing_path is not None:
        write_json(timing_path, timing)
    return {**metrics, **timing, "log_lines": ingest.get("log", []) + ingest["problems"] + ingest["conversions"]}
