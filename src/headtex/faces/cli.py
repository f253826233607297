"""`headtex faces`: synthetic identities (a folder of real photos, or EigenGAN's people) -> data/faces/ shards, preview,
metrics/faces.json."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headtex.datasets import FACES, ShardWriter, read_shard, write_index
from headtex.detection import detect_faces, find_face
from headtex.faces.core import (
    PERSON, PERSON_CORRECTION, RENDERED, FacesParams, PersonFace, RenderedIdentity, Regions, appearance_regions,
    person_from_fit, preview_grid, render_identity, sample_identity, with_person,
)
from headtex.fitting import Fit, image_fit
from headtex.generator import Generator, PoseDirection, check_stylegan_folder, latent, load_stylegan, truncate
from headtex.geometry.template import Template, load_template
from headtex.identity import DESCRIPTOR_SIZE, SAME_PERSON, face_descriptor, identity_report
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.params import load_params, section
from headtex.photos import make_square, read_photo
from headtex.pool import Executor, cached_per_folder, open_executor

PREVIEW_IDENTITIES = 8
PREVIEW_TILE = 128
DETECTION_MAX_ABS_YAW = 45.0  # the detection check covers the views dlib's frontal HOG detector is meant for
DETECTION_CHUNK = 16  # images per detection task
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_LISTED = 50  # problem lines kept in metrics/faces.json (all of them go to the log)
EIGENGAN_CHUNK = 32  # eigengan identities generated, then checked, at a time (bounds memory)
IDENTITY_SIDE_YAWS = (-35.0, 35.0)  # issue 14: each identity's yaw-0 view against its views nearest these
PERSON_SIZE = 512  # generated people are fitted and sampled at this size (face ~250 px: the render layout's detail)
PERSON_TRIES = 6  # latents tried per draw for a person dlib finds, turned at most PERSON_MAX_ABS_YAW
PERSON_MAX_ABS_YAW = 25.0  # a person turned further shows one side too obliquely (the mirror fills what is missing)
STYLEGAN_PROBE_SIGMA = 3.0  # stylegan: the probe step that measures how far a person turns per sigma
STYLEGAN_MIN_GAIN = 2.0  # ... degrees per sigma; a probe that turns less (or loses the face) keeps the model's slope


@cached_per_folder
def _assets(template_dir: str) -> tuple[Template, Regions, Regions]:
    """The template and its appearance regions, loaded once per process and per version of its files."""
    template = load_template(Path(template_dir))
    regions = appearance_regions(template.albedo_render, template.render_texel_triangle >= 0,
                                 template.vertex_uv[template.landmark_ids])
    return template, regions, regions.resized(template.albedo.shape[0])


@cached_per_folder
def _stylegan(folder: str) -> tuple[Generator, np.ndarray, PoseDirection]:
    """The generator (one inference thread: a worker per core), its mean style and yaw direction, once per process."""
    return load_stylegan(Path(folder), threads=1)


def _person(stylegan_dir: str, template: Template, regions: Regions, config: FacesParams, identity: int, attempt: int
            ) -> tuple[Fit, PersonFace, int] | None:
    """(the template's fit to it, face, latents tried) of the identity's generated person for this draw: the first of
    PERSON_TRIES latents [seed, identity, PERSON, attempt, k] that dlib finds turned at most PERSON_MAX_ABS_YAW; None:
    none."""
    generator, mean, _ = _stylegan(stylegan_dir)
    for k in range(PERSON_TRIES):
        style = truncate(generator.styles(latent(config.seed, identity, PERSON, attempt, k)[None]), mean,
                         config.truncation)
        image = generator.images(style, PERSON_SIZE)[0]
        fitted = image_fit(template, image, **PERSON_CORRECTION)
        if fitted is not None and abs(fitted[0].pose[0]) <= PERSON_MAX_ABS_YAW:
            return (*person_from_fit(template, regions, image, fitted[0]), k + 1)
    return None


@dataclass
class SyntheticIdentity:
    """One rendered identity and dlib's verdict on its views, computed once in the worker: for the HOG redraws and
    for the stage's detection and identity checks (which would otherwise run the same detector on the same views)."""

    rendered: RenderedIdentity
    redraws: int  # times its shape and light were redrawn
    resolved: bool  # HOG found every checked view of the kept draw (True when no check ran)
    found: dict[int, bool]  # view -> dlib HOG (upsample 1) found a face, for the views checked (|yaw| <= 45)
    landmarks: dict[int, np.ndarray]  # view -> dlib's 68 points of the chosen face, where the checks need them
    descriptors: np.ndarray | None  # (1 + len(IDENTITY_SIDE_YAWS), 128): yaw-0 view, then the sides; NaN: no face
    render_seconds: float = 0.0
    check_seconds: float = 0.0
    person_latents: int = 0  # generated: latents tried for its person (all draws)
    person_missing: bool = False  # generated: no latent gave a usable person; the template's own face was rendered


def _nearest_view(yaw_degrees: list[float], target: float) -> int:
    return int(np.argmin(np.abs(np.asarray(yaw_degrees) - target)))


def _synthetic_identity(task: tuple[str, FacesParams, int, str]) -> SyntheticIdentity:
    """Render one identity (source generated: with its generated person's face and shape), redrawing it (shape and
    light; generated: the person too) up to hog_resample_attempts times while HOG misses a view at
    |yaw| <= DETECTION_MAX_ABS_YAW, and run the stage's dlib checks on the kept draw's views."""
    template_dir, config, identity, stylegan_dir = task
    template, render_regions, uv_regions = _assets(template_dir)
    yaws = config.yaw_degrees
    checked = [view for view, yaw in enumerate(yaws) if abs(yaw) <= DETECTION_MAX_ABS_YAW]
    checked.sort(key=lambda view: -abs(yaws[view]))  # the likeliest miss (largest |yaw|) first: stop at it
    measured = config.detection_check_identities is None or identity < config.detection_check_identities
    described = config.identity_check_identities is None or identity < config.identity_check_identities
    described_views = [_nearest_view(yaws, 0.0)] + [_nearest_view(yaws, side) for side in IDENTITY_SIDE_YAWS]
    # Views whose landmarks a check needs: find_face there (the same HOG run, plus the landmark predictor).
    landmark_views = {view for view in checked if measured and yaws[view] == 0.0} | (set(described_views) if described else set())
    render_seconds = check_seconds = 0.0
    person_latents, person_missing = 0, False
    for attempt in range(config.hog_resample_attempts + 1):
        tick = time.perf_counter()
        sample = sample_identity(config, identity, template.basis_names, attempt)
        if config.source == "generated":
            person = _person(stylegan_dir, template, render_regions, config, identity, attempt)
            person_latents += PERSON_TRIES if person is None else person[2]
            person_missing = person is None
            if person is not None:
                sample = with_person(sample, person[0], person[1])
        rendered = render_identity(template, render_regions, uv_regions, sample, config.image_size, config.supersample)
        render_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        found, landmarks = {}, {}
        last = attempt == config.hog_resample_attempts
        if config.hog_resample_attempts or measured:
            for view in checked:
                if view in landmark_views:
                    detection = find_face(rendered.images[view], [("hog", 1)])
                    found[view] = detection is not None
                    if detection is not None:
                        landmarks[view] = detection.landmarks.astype(np.float32)
                else:
                    found[view] = len(detect_faces(rendered.images[view], "hog", 1)) > 0
                if not found[view] and not last:
                    break  # redrawn anyway: the other views' verdicts would be thrown away
        check_seconds += time.perf_counter() - tick
        if all(found.values()):
            break
    tick = time.perf_counter()
    descriptors = None
    if described:
        # face_descriptor detects (HOG, then the CNN) where HOG's landmarks are not at hand, as the directory path does.
        descriptors = np.stack([
            np.full(DESCRIPTOR_SIZE, np.nan, np.float32) if d is None else d
            for d in (face_descriptor(rendered.images[view], landmarks.get(view)) for view in described_views)])
    check_seconds += time.perf_counter() - tick
    return SyntheticIdentity(rendered, attempt, all(found.values()), found if measured else {}, landmarks,
                             descriptors, render_seconds, check_seconds, person_latents, person_missing)


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


def _detect_chunk(images: np.ndarray) -> list[bool]:
    """Whether dlib HOG (upsample 1) finds a face in each image."""
    return [len(detect_faces(image, "hog", 1)) > 0 for image in images]


def _record(identity: int, images: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray,
            landmarks: np.ndarray, **truth: np.ndarray) -> dict[str, np.ndarray]:
    views = len(images)
    return dict(images=images, identity=np.full(views, identity, np.int64), view=np.arange(views, dtype=np.int16),
                yaw=yaw.astype(np.float32), pitch=pitch.astype(np.float32), roll=roll.astype(np.float32),
                landmarks=landmarks.astype(np.float32), **truth)


def _generate_synthetic(config: FacesParams, template_dir: Path, stylegan_dir: Path, writer: ShardWriter,
                        executor: Executor) -> tuple[list[np.ndarray], list[np.ndarray], dict, dict]:
    """Render every identity into shards; returns the preview identities' views and lit textures, the counts of
    hog_resample_attempts, and the workers' dlib checks (`verdicts` for detection_report, `frontal` / `sides`
    descriptors for the identity check, summed worker seconds)."""
    template = str(Path(template_dir).resolve())  # absolute: a cluster worker runs elsewhere
    stylegan = str(Path(stylegan_dir).resolve())
    tasks = [(template, config, identity, stylegan) for identity in range(config.identities)]
    preview_views, preview_textures = [], []
    resample = dict(attempts=config.hog_resample_attempts, resampled_identities=0, redraws=0, unresolved_identities=[])
    if config.source == "generated":
        resample.update(person_latents=0, identities_without_person=[])
    checks = dict(verdicts=[], frontal=[], sides=[], render_seconds=0.0, check_seconds=0.0)
    for identity, result in enumerate(executor.map(_synthetic_identity, tasks, "faces")):
        rendered = result.rendered
        resample["resampled_identities"] += result.redraws > 0
        resample["redraws"] += result.redraws
        if not result.resolved:
            resample["unresolved_identities"].append(identity)
        if config.source == "generated":
            resample["person_latents"] += result.person_latents
            if result.person_missing:
                resample["identities_without_person"].append(identity)
        for view in sorted(result.found):  # view order: the metric lists misses as the shard-reading check does
            verdict = result.landmarks.get(view, True) if result.found[view] else False
            truth = rendered.landmarks[view] if config.yaw_degrees[view] == 0.0 else None
            checks["verdicts"].append((identity, view, float(rendered.yaw[view]), verdict, truth))
        if result.descriptors is not None:
            checks["frontal"].append(result.descriptors[0])
            checks["sides"].append(result.descriptors[1:])
        checks["render_seconds"] += result.render_seconds
        checks["check_seconds"] += result.check_seconds
        writer.add(_record(identity, rendered.images, rendered.yaw, rendered.pitch, rendered.roll, rendered.landmarks,
                           lit_texture=rendered.lit_texture, shape=rendered.shape))
        if identity < PREVIEW_IDENTITIES:
            preview_views.append(rendered.images)
            preview_textures.append(rendered.lit_texture)
    writer.flush()
    return preview_views, preview_textures, resample, checks


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


def _ingest_directory(config: FacesParams, writer: ShardWriter, executor: Executor) -> dict:
    """Read every identity folder into shards; returns names, problems, conversions and the preview views."""
    listing, problems = list_directory(Path(config.dir))
    tasks = [(str(folder.resolve()), names, config) for folder, names in listing]
    names, conversions, preview_views, view_counts = {}, [], [], []
    for (folder, _), ingested in zip(listing, executor.map(_ingest_identity, tasks, "faces")):
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


def eigengan_source(config: FacesParams, writer: ShardWriter, executor: Executor) -> dict:
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
        checks = executor.map(_check_eigengan_identity, [(images, centre) for images in batch], "faces: eigengan")
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


@dataclass
class TurnedIdentity:
    """One stylegan identity: its views along the yaw direction, our fit's yaw of each and dlib's verdict."""

    images: np.ndarray  # V,S,S,3: every requested view
    kept: list[int]  # the views kept: dlib finds a face within SAME_PERSON of the centre view's (empty: dropped)
    fitted_yaw: list[float]  # per view: our landmark fit's yaw, degrees (NaN: no face)
    distance: list[float]  # per view: descriptor distance to the centre view (NaN: no face)
    steps_sigma: list[float]  # per view: the step along the yaw direction, in sigmas
    descriptors: np.ndarray  # (1 + len(IDENTITY_SIDE_YAWS), 128): centre view, then the kept views nearest the sides
    degrees_per_sigma: float  # how far this person turned per sigma (the probe's), or the linear model's


def _stylegan_identity(task: tuple[str, str, FacesParams, int]) -> TurnedIdentity:
    """One latent, turned: the style moved along the yaw direction to each requested yaw, steps capped at
    stylegan_max_step_sigma. The linear yaw model says where the person looks; how far this person turns per sigma is
    measured (our fit on a probe STYLEGAN_PROBE_SIGMA along the direction): the model's own slope overstates it ~2x."""
    stylegan_dir, template_dir, config, identity = task
    generator, mean, pose = _stylegan(stylegan_dir)
    template = _assets(template_dir)[0]
    style = truncate(generator.styles(latent(config.seed, identity, PERSON)[None]), mean, config.truncation)[0]
    predicted_gain = pose.degrees_per_unit * pose.sigma  # degrees per sigma
    start = -float(pose.yaw(style, mean)) / predicted_gain  # the step the model predicts frontal

    def turned(steps: np.ndarray) -> np.ndarray:
        return generator.images(style + (steps * pose.sigma)[:, None].astype(np.float32) * pose.direction,
                                config.image_size)

    probe_yaws = []
    for image in turned(np.array([start, start + STYLEGAN_PROBE_SIGMA])):
        fitted = image_fit(template, image)
        probe_yaws.append(np.nan if fitted is None else float(fitted[0].pose[0]))
    gain = (probe_yaws[1] - probe_yaws[0]) / STYLEGAN_PROBE_SIGMA
    centre_yaw = probe_yaws[0] if np.isfinite(probe_yaws[0]) else 0.0
    if not np.isfinite(gain) or gain < STYLEGAN_MIN_GAIN:
        gain = predicted_gain
    targets = np.asarray(config.yaw_degrees, np.float64)
    steps = np.clip(start + (targets - centre_yaw) / gain, -config.stylegan_max_step_sigma,
                    config.stylegan_max_step_sigma)
    images = turned(steps)
    yaws, found = [], []
    for image in images:
        fitted = image_fit(template, image)
        yaws.append(float("nan") if fitted is None else float(fitted[0].pose[0]))
        found.append(None if fitted is None else face_descriptor(image, fitted[1]))
    nan = np.full(DESCRIPTOR_SIZE, np.nan, np.float32)
    centre = _nearest_view(config.yaw_degrees, 0.0)
    reference = found[centre]
    distance = [float("nan") if d is None or reference is None else float(np.linalg.norm(d - reference))
                for d in found]
    kept = [] if reference is None else [v for v, d in enumerate(distance) if d < SAME_PERSON]
    sides = [_nearest_view(config.yaw_degrees, side) for side in IDENTITY_SIDE_YAWS]
    descriptors = np.stack([nan if reference is None else reference]
                           + [found[v] if v in kept else nan for v in sides])
    return TurnedIdentity(images, kept, yaws, distance, [float(t) for t in steps], descriptors, float(gain))


def stylegan_source(config: FacesParams, stylegan_dir: Path, template_dir: Path, writer: ShardWriter,
                    executor: Executor) -> dict:
    """Generated people turned along the stylegan stage's yaw direction into shards: the views that drift into
    another person (dlib) or lose the face are dropped (counted), an identity whose centre view has no face too;
    no ground truth (NaN pose); the yaw our fit measured on each view is reported."""
    tasks = [(str(Path(stylegan_dir).resolve()), str(Path(template_dir).resolve()), config, identity)
             for identity in range(config.identities)]
    views = len(config.yaw_degrees)
    kept_ids, preview_views, yaws, distances, steps, kept_views, frontal, sides, gains = [], [], [], [], [], [], [], [], []
    for identity, turned in enumerate(executor.map(_stylegan_identity, tasks, "faces: stylegan")):
        yaws.append(turned.fitted_yaw)
        distances.append(turned.distance)
        steps.append(turned.steps_sigma)
        gains.append(turned.degrees_per_sigma)
        kept_views.append(turned.kept)
        frontal.append(turned.descriptors[0])
        sides.append(turned.descriptors[1:])
        if not turned.kept:
            continue
        images = turned.images[turned.kept]
        nan = np.full(len(images), np.nan, np.float32)
        writer.add(_record(len(kept_ids), images, nan, nan, nan, np.full((len(images), 68, 2), np.nan, np.float32)))
        kept_ids.append(identity)
        if len(preview_views) < PREVIEW_IDENTITIES:
            preview_views.append(turned.images)  # every view, the dropped ones too: the preview shows the drift
    writer.flush()
    yaws, distances = np.array(yaws), np.array(distances)
    kept = np.zeros((config.identities, views), bool)
    for identity, chosen in enumerate(kept_views):
        kept[identity, chosen] = True
    per_view = []
    for view, target in enumerate(config.yaw_degrees):
        reached = yaws[kept[:, view], view]
        per_view.append({"yaw_requested": float(target), "kept": int(kept[:, view].sum()),
                         "dropped_another_person": int(np.sum(distances[:, view] >= SAME_PERSON)),
                         "dropped_no_face": int(np.sum(np.isnan(distances[:, view]))),
                         "step_sigma_median": round(float(np.median(np.array(steps)[:, view])), 3),
                         "fitted_yaw_median": round(float(np.median(reached)), 2) if len(reached) else None,
                         "fitted_yaw_p10_p90": [round(float(v), 2) for v in np.percentile(reached, [10, 90])]
                         if len(reached) else None})
    within = [v for v, y in enumerate(config.yaw_degrees) if abs(y) <= 35.0]
    check = {"generated": config.identities, "kept": len(kept_ids),
             "dropped_no_centre_face": int(sum(not chosen for chosen in kept_views)),
             "degrees_per_sigma_median": round(float(np.median(gains)), 3),
             "views_kept": int(kept.sum()), "views_dropped_another_person": int(np.sum(distances >= SAME_PERSON)),
             "views_dropped_no_face": int(np.sum(np.isnan(distances))) - views * int(sum(not c for c in kept_views)),
             "share_identities_all_views_kept_abs_yaw_le_35": round(float(kept[:, within].all(axis=1).mean()), 4),
             "fitted_yaw_range_reached": [round(float(np.nanmin(np.where(kept, yaws, np.nan))), 2),
                                          round(float(np.nanmax(np.where(kept, yaws, np.nan))), 2)] if kept.any() else None,
             "per_view": per_view}
    facts = dict(source="stylegan", views_per_identity=None, view_counts=[int(k.sum()) for k in kept if k.any()],
                 has_truth=False, identities=len(kept_ids), latent_ids=kept_ids,
                 yaw_degrees_requested=[float(y) for y in config.yaw_degrees])
    return dict(problems=[], conversions=[], preview_views=preview_views, facts=facts, stylegan_check=check,
                identity_descriptors=(np.array(frontal), np.array(sides)),
                log=[f"stylegan: {len(kept_ids)} of {config.identities} identities kept, {int(kept.sum())} of "
                     f"{config.identities * views} views ({check['views_dropped_another_person']} turned into another "
                     f"person, {check['views_dropped_no_face']} without a face)"])


def detection_check(folder: Path, entries: list[dict], check_identities: int, executor: Executor) -> dict:
    """dlib HOG face-found rate over every view of the first identities, read back from the shards (photos and
    EigenGAN's people: no pose, no truth; the synthetic source's workers check their own views instead)."""
    verdicts = []
    for entry in entries:
        if not any(i < check_identities for i in entry["identities"]):
            continue
        shard = read_shard(folder, entry, FACES, ("images", "identity", "view", "yaw"))
        rows = np.flatnonzero(shard["identity"] < check_identities)
        chunks = [shard["images"][rows[i:i + DETECTION_CHUNK]] for i in range(0, len(rows), DETECTION_CHUNK)]
        results = [found for chunk in executor.map(_detect_chunk, chunks, "faces: dlib check") for found in chunk]
        verdicts += [(int(shard["identity"][row]), int(shard["view"][row]), float(shard["yaw"][row]), found, None)
                     for row, found in zip(rows, results)]
    return detection_report(verdicts)


def detection_report(verdicts: list[tuple[int, int, float, bool | np.ndarray, np.ndarray | None]]) -> dict:
    """The detection check's figures from (identity, view, yaw, False = no face | True = found | dlib's 68 points,
    the true 68 points or None) per checked view; dlib's inner landmarks are compared with the truth where both are."""
    missed, errors = [], []
    for identity, view, yaw, result, truth in verdicts:
        if result is False:
            missed.append(f"identity {identity} view {view} (yaw {yaw:g}): no face found")
        elif result is not True and truth is not None:
            # Inner landmarks (17-67): dlib's jaw points follow the silhouette, not the mesh's jaw line.
            errors.append(np.linalg.norm(result[17:] - truth[17:], axis=1).mean())
    checked = len(verdicts)
    found = checked - len(missed)
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
                   executor: Executor) -> dict:
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
    descriptors = np.concatenate(list(executor.map(_describe, chunks, "faces: identity check")))
    count = len(frontal_rows)
    sides = descriptors[count:].reshape(len(side_rows), len(IDENTITY_SIDE_YAWS), DESCRIPTOR_SIZE) if side_rows else None
    return identity_figures(descriptors[:count], sides, max_pairs)


def identity_figures(frontal: np.ndarray, sides: np.ndarray | None, max_pairs: int | None) -> dict:
    """The identity check's figures from descriptors (frontal N,128; sides N,S,128 or None: pairs only)."""
    if not len(frontal):
        return {"identities": 0}
    count = len(frontal)
    report = identity_report(frontal, sides if sides is not None else np.full((count, 0, DESCRIPTOR_SIZE), np.nan),
                             max_pairs)
    if sides is None or len(sides) != count:
        report = {k: v for k, v in report.items() if k not in ("median_within_distance", "share_identities_consistent")}
    else:
        report["side_yaws"] = list(IDENTITY_SIDE_YAWS)
    return report


def _checked_template(template_dir: Path, config: FacesParams) -> Template:
    """The template, checked against the params before any task starts."""
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
    rate_key = "hog_detection_rate_abs_yaw_le_45" if config.source in RENDERED else "hog_detection_rate_all_views"
    metrics[rate_key] = detection["rate"]
    metrics["hog_checked_views"] = detection["checked_views"]
    if "landmark_error_px_yaw0" in detection:
        metrics["dlib_vs_true_inner_landmarks_px_yaw0"] = detection["landmark_error_px_yaw0"]
    metrics["identity_check"] = identity
    return metrics


def run(params_path: Path, template_dir: Path, out: Path, metrics_path: Path, workers: int = 0,
        timing_path: Path | None = None, stylegan_dir: Path = Path("models/stylegan")) -> dict:
    """The faces stage: writes out/ (shards, index.json, preview/) and metrics_path.

    Returns the metrics plus `log_lines`: every bad-input and conversion line, for the log.
    """
    started = time.perf_counter()
    config = section(load_params(params_path), "faces", FacesParams)
    synthetic = config.source in RENDERED
    template = _checked_template(template_dir, config) if synthetic else None
    if config.source in ("generated", "stylegan"):
        check_stylegan_folder(stylegan_dir)

    with open_executor(workers, "faces") as executor, atomic_dir(out) as staging:
        writer = ShardWriter(staging, config.shard_size, per_identity=("lit_texture", "shape"))
        tick = time.perf_counter()
        if synthetic:
            preview_views, preview_textures, resample, worker_checks = _generate_synthetic(
                config, template_dir, stylegan_dir, writer, executor)
            views = len(config.yaw_degrees)
            facts = dict(source=config.source, yaw_degrees=[float(y) for y in config.yaw_degrees], views_per_identity=views,
                         has_truth=True, shape_names=template.basis_names, identities=config.identities)
            ingest = dict(problems=[], conversions=[], hog_resample=resample)
        elif config.source == "stylegan":
            ingest = stylegan_source(config, stylegan_dir, template_dir, writer, executor)
            preview_views, preview_textures = ingest["preview_views"], None
            facts = ingest["facts"]
        elif config.source == "eigengan":
            ingest = eigengan_source(config, writer, executor)
            preview_views, preview_textures = ingest["preview_views"], None
            facts = ingest["facts"]
        else:
            ingest = _ingest_directory(config, writer, executor)
            preview_views, preview_textures = ingest["preview_views"], None
            counts = ingest["view_counts"]
            facts = dict(source="directory", views_per_identity=counts[0] if len(set(counts)) == 1 else None,
                         view_counts=counts, has_truth=False, names=ingest["names"], identities=len(counts))
        generate_seconds = time.perf_counter() - tick
        images = sum(entry["count"] for entry in writer.entries)

        tick = time.perf_counter()
        check = config.detection_check_identities
        check = facts["identities"] if check is None else min(check, facts["identities"])
        if synthetic:
            detection = detection_report(worker_checks["verdicts"])
        else:
            detection = detection_check(staging, writer.entries, check, executor)
        detection_seconds = time.perf_counter() - tick

        tick = time.perf_counter()
        cap = config.identity_check_identities
        cap = facts["identities"] if cap is None else min(cap, facts["identities"])
        if "identity_descriptors" in ingest:  # stylegan: its workers described the centre and side views
            frontal, sides = ingest["identity_descriptors"]
            identity = identity_figures(frontal[:cap], sides[:cap], config.identity_max_pairs)
        elif synthetic:
            sides = np.array(worker_checks["sides"]).reshape(len(worker_checks["sides"]), len(IDENTITY_SIDE_YAWS),
                                                             DESCRIPTOR_SIZE)
            identity = identity_figures(np.array(worker_checks["frontal"]).reshape(-1, DESCRIPTOR_SIZE), sides,
                                        config.identity_max_pairs)
        else:
            identity = identity_check(staging, writer.entries, cap, config.identity_max_pairs, executor)
        identity_seconds = time.perf_counter() - tick

        if preview_views:  # none when the eigengan check kept no identity
            write_png(staging / "preview" / "grid.png", preview_grid(preview_views, PREVIEW_TILE, preview_textures))
        write_index(staging, writer.entries, image_size=config.image_size, uv_size=config.uv_size, images=images, **facts)

    metrics = faces_metrics(config, facts["identities"], images, ingest, check, detection, identity)
    if "eigengan_check" in ingest:
        metrics["eigengan_identity_check"] = ingest["eigengan_check"]
    if "stylegan_check" in ingest:
        metrics["stylegan_check"] = ingest["stylegan_check"]
    if "hog_resample" in ingest:
        metrics["hog_resample"] = {**ingest["hog_resample"],
                                   "unresolved_identities": ingest["hog_resample"]["unresolved_identities"][:MAX_LISTED]}
    write_json(metrics_path, metrics)
    timing = {**executor.facts(), "seconds": round(time.perf_counter() - started, 2),
              "generate_seconds": round(generate_seconds, 2), "images_per_second": round(images / generate_seconds, 2),
              "detection_seconds": round(detection_seconds, 2), "identity_check_seconds": round(identity_seconds, 2)}
    if synthetic:  # the workers rendered and checked their views: their summed seconds, split
        timing.update(worker_render_seconds=round(worker_checks["render_seconds"], 2),
                      worker_check_seconds=round(worker_checks["check_seconds"], 2),
                      render_images_per_second=round(images * executor.workers / worker_checks["render_seconds"], 2))
    if timing_path is not None:
        write_json(timing_path, timing)
    return {**metrics, **timing, "log_lines": ingest.get("log", []) + ingest["problems"] + ingest["conversions"]}
