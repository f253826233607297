"""`headtex reconstruct`: photos -> per photo a folder with the textured head (OBJ + MTL + texture PNG),
the partial texture and its mask, the fit (fit.json), an overlay and a preview strip."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import torch

from headtex.assets import find_model, find_params, find_template
from headtex.detection import detect_faces, detection_attempts, landmarks_in_box
from headtex.facemesh import load_correspondence, warm_up as facemesh_warm_up
from headtex.fitting import (
    DenseAssets, FitParams, JawRegion, dense_assets, fitted_landmarks, jaw_region, photo_partial_texture,
)
from headtex.geometry.template import Template, load_template, write_obj
from headtex.inpaint import Generator
from headtex.inpaint.complete import complete_texture
from headtex.inpaint.model import load_inpainter
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.masking import is_visible
from headtex.params import load_params, section
from headtex.photos import PhotosParams, downscaled, read_photo
from headtex.progress import progress, report
from headtex.reconstruct.core import (
    Face, Reconstruction, ReconstructParams, face_problem, find_faces, fit_face, overlay, person_of, preview,
    reconstruct_face, torch_threads,
)

# Photos that ship with an installed package, so a fresh machine has a real photograph without a download.
EXAMPLES = {
    "astronaut": "skimage.data.astronaut(): NASA portrait of astronaut Eileen Collins (public domain), "
                 "bundled with scikit-image",
}
OUTPUT_FILES = ("head.obj", "head.mtl", "texture.png", "partial.png", "mask.png", "fit.json", "overlay.png",
                "preview.png")
CAMERA = ("weak perspective: x = scale (R X)_x + tx, y = -scale (R X)_y + ty (photo pixels, y down); X in the head "
          "frame of head.obj (mm; x = subject's left, y = up, z = out of the face); R = Rz(roll) Rx(pitch) Ry(yaw); "
          "yaw > 0 turns the nose to the image's right, pitch > 0 tilts it down")


@dataclass
class Assets:
    """What every photo needs, loaded once per command."""

    template: Template
    jaw: JawRegion
    generator: Generator
    model: dict  # file, latent, ship_output, uv_size
    dense: DenseAssets  # the face mesh's points on the template and its models (pafs.dense, pafs.person_mask)


def load_assets(template_dir: Path, model_path: Path, uv_size: int) -> Assets:
    template = load_template(template_dir)
    size = template.texel_triangle.shape[0]
    if size != uv_size:
        raise UserError(f"{template_dir}: template built for uv.size {size}, params.yaml says {uv_size}; "
                        "rebuild it with `headtex template`")
    generator, info = load_inpainter(model_path)
    if info["uv_size"] != size:
        raise UserError(f"{model_path}: model trained at {info['uv_size']}x{info['uv_size']} texels, the template "
                        f"has {size}x{size}; retrain it (`headtex train`) or use the matching template")
    return Assets(template, jaw_region(template), generator, {"file": str(model_path), **info},
                  dense_assets(template, load_correspondence(template_dir)))


def find_assets(params: Path | None, model: Path | None, template_dir: Path | None) -> tuple[Path, Path, Path]:
    """params.yaml, the model and the template: as given, else where headtex.assets finds them (any folder)."""
    params, template_dir = find_params(params), find_template(template_dir)
    return params, find_model(model), template_dir


def warm_up(assets: Assets, pafs: FitParams) -> None:
    """Load dlib's detector and landmark model and run the network once (torch sets up its convolutions
    on the first call), so that per-photo timings measure the photo; this goes to setup_seconds."""
    blank = np.zeros((64, 64, 3), dtype=np.uint8)
    detect_faces(blank, pafs.detector, 0)
    landmarks_in_box(blank, dlib.rectangle(0, 0, 63, 63))
    size = assets.template.texel_triangle.shape
    complete_texture(assets.generator, np.zeros(size + (3,), np.uint8), np.zeros(size, np.uint8),
                     assets.template.texel_valid, assets.model["ship_output"])
    facemesh_warm_up([assets.dense.mesh.mesh_model, assets.dense.mesh.segmentation_model])


def example_photo(name: str) -> np.ndarray:
    if name not in EXAMPLES:
        raise UserError(f"unknown example {name!r}: choose from {', '.join(EXAMPLES)}")
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def folder_names(labels: list[str]) -> list[str]:
    """One output folder name per input (the photo's stem; repeated stems get -2, -3, ...)."""
    seen: Counter[str] = Counter()
    names = []
    for label in labels:
        stem = Path(label).stem or "photo"
        seen[stem] += 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def rounded(array: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


def face_list(faces: list[Face], problems: list[str | None]) -> list[dict]:
    """fit.json's `faces`: every face found, most prominent first (numbered from 1, as --face counts)."""
    return [{"face": number, "box": rounded(face.box, 1), "score": round(face.score, 4), "detector": face.detector,
             "detector_upsample": face.upsample, "problem": problem}
            for number, (face, problem) in enumerate(zip(faces, problems), start=1)]


def fit_record(label: str, image: np.ndarray, notes: list[str], result: Reconstruction, assets: Assets,
               number: int = 1, faces: list[dict] = ()) -> dict:
    """Everything fit.json holds (except the writing time, added last)."""
    template, fit, face = assets.template, result.fit, result.face
    yaw, pitch, roll = fit.pose
    valid = template.texel_valid
    return {
        "photo": label,
        "face": number,
        "faces": list(faces),
        "fidelity": result.fidelity,
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "conversions": notes,
        # Counter-clockwise turn applied to the photo before detection and fit (0 = as stored): landmarks,
        # fitted_landmarks, face_box, sampling.box and the camera are in the turned photo's pixels.
        "photo_rotation_degrees": 90 * face.quarter_turns,
        "detector": face.detector,
        "detector_upsample": face.upsample,
        "detector_score": round(face.score, 4),
        "face_box": rounded(face.box, 1),
        "detection_downscale": round(face.detect_factor, 4),
        "landmarks": rounded(face.landmarks, 2),
        # The fitted mesh's landmark vertices as the fit matched them (far-side jaw: the outline, ibug's convention).
        "fitted_landmarks": rounded(fitted_landmarks(template, fit, matched=True), 2),
        "landmark_residual_px": round(fit.residual, 3),
        "pose_degrees": {"yaw": round(yaw, 3), "pitch": round(pitch, 3), "roll": round(roll, 3)},
        "rotation": rounded(fit.rotation, 6),
        "scale_px_per_mm": round(float(fit.scale), 6),
        "translation_px": rounded(fit.translation, 3),
        "camera": CAMERA,
        # Lists, not a mapping: the coefficients' order is the basis order (fit.json is written with sorted keys).
        "shape": {"names": list(template.basis_names), "coefficients": rounded(fit.shape, 4),
                  "units": "standard deviations of each mode (template.npz basis: mm per unit)"},
        "visible_fraction": round(float(is_visible(result.visible[valid]).mean()), 4),
        "sampling": {"box": list(result.sample_box), "downscale": round(result.sample_factor, 4)},
        "model": assets.model,
        "mesh": {"vertices": int(len(template.vertices)), "triangles": int(len(template.faces)),
                 "frame": "head frame, millimetres"},
    }


def parse_face_choice(choice: str) -> int | None:
    """--face: 'all' -> None, K -> K (1 = the most prominent face)."""
    if str(choice).strip().lower() == "all":
        return None
    try:
        number = int(choice)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"--face must be 'all' or a face number from 1 (the most prominent), got {choice!r}")
    return number


def reconstruct_photo(image: np.ndarray, notes: list[str], label: str, folder: Path, assets: Assets,
                      config: ReconstructParams, pafs: FitParams, save_photo: bool = False,
                      read_seconds: float = 0.0, face_choice: int | None = 1) -> tuple[list[dict], list[dict]]:
    """Reconstruct the chosen face (face_choice = K) or every face (None: into folder/face-N/) of one photo;
    returns (fit.json contents of each written face, one {photo, face, error} per face that could not be).
    A single chosen face that fails raises UserError."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder (output for {label})")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    faces = find_faces(image, config, pafs, assets.template, assets.jaw, timings)
    if not faces:
        attempts = detection_attempts(pafs.detector, config.upsample, pafs.fallback_detector, pafs.fallback_upsample)
        tried = ", ".join(f"{detector} (upsample {upsample})" for detector, upsample in attempts)
        raise UserError(f"{label}: no face found at any quarter turn (dlib {tried})")
    problems = [face_problem(face, image.shape, config) for face in faces]
    listed = face_list(faces, problems)
    if face_choice is not None and face_choice > len(faces):
        raise UserError(f"{label}: --face {face_choice}, but {len(faces)} face{'s' * (len(faces) > 1)} found")
    chosen = range(1, len(faces) + 1) if face_choice is None else [face_choice]
    records, failures = [], []
    for number in chosen:
        face, problem = faces[number - 1], problems[number - 1]
        where = f"{label}: face {number} of {len(faces)}"
        if problem is not None:
            if face_choice is not None:
                raise UserError(f"{where}: {problem}")
            failures.append({"photo": label, "face": number, "error": f"{where}: {problem}"})
            continue
        target = folder if face_choice is not None else folder / f"face-{number}"
        others = [other.box for other in faces if other is not face]
        records.append(write_face(image, notes, label, target, assets, config, pafs, face, number, listed,
                                  save_photo, read_seconds, timings, started, others))
        started, read_seconds = time.perf_counter(), 0.0  # the next face's time excludes detection and reading
        timings = {"detection": 0.0}
    return records, failures


def write_face(image: np.ndarray, notes: list[str], label: str, folder: Path, assets: Assets,
               config: ReconstructParams, pafs: FitParams, face: Face, number: int, listed: list[dict],
               save_photo: bool, read_seconds: float, timings: dict[str, float], started: float,
               others: list[tuple[float, float, float, float]] | None = None) -> dict:
    """Fit, texture and write one face's folder atomically; returns its fit.json contents. others: the photo's
    other faces' boxes (the person mask leaves them out)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder (output for {label})")
    result = reconstruct_face(image, face, assets.template, assets.jaw, assets.generator,
                              assets.model["ship_output"], config, pafs, timings, assets.dense, others)
    if face.quarter_turns:
        notes = notes + [f"turned {90 * face.quarter_turns} degrees counter-clockwise: no upright face, "
                         "an upright one at this turn (the fit, landmarks and overlay are in the turned photo)"]
    timings = {"read": read_seconds, **result.timings}
    tick = time.perf_counter()
    pictures = {"overlay.png": overlay(result.image, assets.template, result.fit, result.face.landmarks,
                                       config.overlay_max_side, result.face.detection_copy),
                "preview.png": preview(result.image, assets.template, result, config.preview_size)}
    timings["pictures"] = time.perf_counter() - tick
    if save_photo:
        pictures["photo.png"] = image
    record = fit_record(label, image, notes, result, assets, number, listed)
    tick = time.perf_counter()
    try:
        with atomic_dir(folder) as staging:
            write_files(staging, assets.template, result, pictures)
            # fit.json holds what the photo determines; the times go to the --timing file only, so that
            # rerunning a photo rewrites the same files (data/demo is a DVC output).
            write_json(staging / "fit.json", record)
    except OSError as error:
        raise UserError(f"{folder}: cannot write the output ({error.strerror or error})") from None
    timings["writing"] = time.perf_counter() - tick
    timings["total"] = read_seconds + time.perf_counter() - started
    return {**record, "timings_seconds": {key: round(value, 4) for key, value in timings.items()}}


def record_keys(records: list[dict], out: Path) -> list[str]:
    """Each written folder relative to --out: `photo` or `photo/face-N`."""
    return [Path(r["folder"]).relative_to(out).as_posix() for r in records]


def write_files(folder: Path, template: Template, result: Reconstruction, pictures: dict[str, np.ndarray]) -> None:
    """The textured head (in the head frame, mm, as MeshLab shows it), the textures, the mask and the pictures."""
    write_obj(folder / "head.obj", result.fit.vertices(template), template.faces, template.vertex_uv, "texture.png")
    write_png(folder / "texture.png", result.texture)
    write_png(folder / "partial.png", result.paf)
    write_png(folder / "mask.png", result.visible)
    for name, picture in pictures.items():
        write_png(folder / name, picture)


def run(params_path: Path, photos: list[Path], out: Path, model_path: Path, template_dir: Path,
        examples: list[str] = (), metrics_path: Path | None = None, timing_path: Path | None = None,
        face: str = "1") -> dict:
    """Reconstruct every photo (and example) into out/<name>/; a bad photo among several is reported and
    skipped, a single bad photo raises."""
    params = load_params(params_path)
    config = section(params, "reconstruct", ReconstructParams)
    matte = tuple(section(params, "photos", PhotosParams).alpha_background)
    pafs = section(params, "pafs", FitParams, partial=True)
    face_choice = parse_face_choice(face)
    inputs = [(str(path), Path(path)) for path in photos] + [(name, name) for name in examples]
    if not inputs:
        raise UserError("no photos given: pass PHOTO... or --example astronaut")
    unknown = [name for name in examples if name not in EXAMPLES]
    if unknown:  # before any work
        raise UserError(f"unknown example {unknown[0]!r}: choose from {', '.join(EXAMPLES)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out}: cannot create the output folder ({error.strerror or error})") from None
    with torch_threads(config.threads):
        return reconstruct_all(inputs, out, model_path, template_dir, config, pafs, matte, metrics_path, timing_path,
                               face_choice)


def reconstruct_all(inputs: list[tuple[str, Path | str]], out: Path, model_path: Path, template_dir: Path,
                    config: ReconstructParams, pafs: FitParams, matte: tuple[int, int, int],
                    metrics_path: Path | None, timing_path: Path | None, face_choice: int | None = 1) -> dict:
    started = time.perf_counter()
    assets = load_assets(template_dir, model_path, config.uv_size)
    warm_up(assets, pafs)
    setup_seconds = time.perf_counter() - started

    records, failures = [], []
    names = folder_names([label if isinstance(source, Path) else f"{label}.png" for label, source in inputs])
    steps = list(zip(inputs, names))
    for (label, source), name in progress(steps, "reconstruct") if len(steps) > 1 else steps:
        try:
            tick = time.perf_counter()
            if isinstance(source, Path):
                image, notes = read_photo(source, matte)
            else:
                image, notes = example_photo(source), [f"example photo {EXAMPLES[source]}"]
            written, failed = reconstruct_photo(image, notes, label, out / name, assets, config, pafs,
                                                save_photo=not isinstance(source, Path),
                                                read_seconds=time.perf_counter() - tick, face_choice=face_choice)
            folders = [out / name] if face_choice is not None else [out / name / f"face-{r['face']}" for r in written]
            records += [{"folder": str(folder), **record} for folder, record in zip(folders, written)]
            for failure in failed:
                failures.append(failure)
                report(f"error: {failure['error']}", error=True)
        except UserError as error:
            if len(inputs) == 1:
                raise
            failures.append({"photo": label, "error": str(error)})
            report(f"error: {error}", error=True)
        finally:
            image = None  # a 20000 px photo is 1.2 GB: free it before reading the next

    totals = [r["timings_seconds"]["total"] for r in records]
    metrics = {
        "photos": len(inputs),
        "written": len(records),
        "failed": len(failures),
        "failures": failures,
        "model": assets.model,
        "per_photo": {key: {
            "photo": r["photo"], "face": r["face"], "faces_found": len(r["faces"]), "image_size": r["image_size"],
            "detector": r["detector"], "detector_score": r["detector_score"], "pose_degrees": r["pose_degrees"],
            "landmark_residual_px": r["landmark_residual_px"], "visible_fraction": r["visible_fraction"],
            "fidelity": r["fidelity"]}
            for key, r in zip(record_keys(records, out), records)},
    }
    timing = {
        "setup_seconds": round(setup_seconds, 3),  # template, model, dlib models, one warm-up forward pass
        "torch_threads": torch.get_num_threads(),
        "seconds_per_photo_median": round(float(np.median(totals)), 4) if totals else None,
        "per_photo": {key: r["timings_seconds"] for key, r in zip(record_keys(records, out), records)},
    }
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    if timing_path is not None:
        write_json(timing_path, timing)
    return {**metrics, "seconds_per_photo_median": timing["seconds_per_photo_median"],
            "folders": [r["folder"] for r in records]}


BENCH_SIDE = 1024  # the benchmark's photo: the example upscaled to 1024 x 1024 (1 megapixel), JPEG quality 92


def bench(params_path: Path | None, model_path: Path | None, template_dir: Path | None, example: str,
          repeats: int, photo_path: Path | None = None) -> str:
    """Median seconds per phase of one face in a 1-megapixel photo (the example upscaled to 1024 x 1024, or
    `photo_path` scaled to one megapixel) through reconstruct's path: read (JPEG
    decode), detect (HOG boxes on the detection copy), landmarks (dlib's 68 in the best box), find (the whole
    detection step as reconstruct runs it: HOG + landmarks + the CNN's second look where it triggers), fit,
    sample (head crop + z-buffer + PAF), complete (the network); total = read + find + fit + sample + complete.
    One warm-up round is not counted; wall and CPU time per phase (torch and dlib on one thread: on an idle
    machine the two agree) and the load average are printed (a shared machine inflates the wall time)."""
    import os
    import platform
    import tempfile

    import cv2

    params_path, model_path, template_dir = find_assets(params_path, model_path, template_dir)
    params = load_params(params_path)
    config = section(params, "reconstruct", ReconstructParams)
    pafs = section(params, "pafs", FitParams, partial=True)
    matte = tuple(section(params, "photos", PhotosParams).alpha_background)
    assets = load_assets(template_dir, model_path, config.uv_size)
    if photo_path is None:
        photo = cv2.resize(example_photo(example), (BENCH_SIDE, BENCH_SIDE), interpolation=cv2.INTER_CUBIC)
    else:  # a photo of the user's, scaled to one megapixel (aspect kept)
        photo, _ = read_photo(photo_path, matte)
        factor = np.sqrt(BENCH_SIDE ** 2 / (photo.shape[0] * photo.shape[1]))
        photo = cv2.resize(photo, None, fx=factor, fy=factor,
                           interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
        example = Path(photo_path).stem
    keys = ("read", "detect", "landmarks", "find", "fit", "sample", "complete", "total")
    phases: dict[str, list[float]] = {key: [] for key in keys}
    cpu: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory() as folder, torch_threads(config.threads):
        path = Path(folder) / f"{example}-1mp.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        warm_up(assets, pafs)
        for round_ in range(repeats + 1):
            seconds, cpu_seconds = {}, {}
            tick, cpu_tick = time.perf_counter(), time.process_time()
            image, _ = read_photo(path, matte)
            seconds["read"], cpu_seconds["read"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            small, _ = downscaled(image, config.detect_max_side)
            tick, cpu_tick = time.perf_counter(), time.process_time()
            boxes = detect_faces(small, pafs.detector, config.upsample)
            seconds["detect"], cpu_seconds["detect"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            if not boxes:
                raise UserError(f"bench: no face found in the {example} example")
            tick, cpu_tick = time.perf_counter(), time.process_time()
            landmarks_in_box(small, max(boxes, key=lambda b: b[0].width())[0])
            seconds["landmarks"], cpu_seconds["landmarks"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            tick, cpu_tick = time.perf_counter(), time.process_time()
            face = find_faces(image, config, pafs, assets.template, assets.jaw)[0]
            seconds["find"], cpu_seconds["find"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            tick, cpu_tick = time.perf_counter(), time.process_time()
            fit = fit_face(image, face, assets.template, assets.jaw, config, pafs, assets.dense)
            seconds["fit"], cpu_seconds["fit"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            tick, cpu_tick = time.perf_counter(), time.process_time()
            person = person_of(image, face, [], pafs, assets.dense)
            paf, visible, _, _ = photo_partial_texture(image, assets.template, fit, pafs.max_view_angle_degrees,
                                                       pafs.depth_tolerance_mm, config.sample_max_side, person)
            seconds["sample"], cpu_seconds["sample"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            tick, cpu_tick = time.perf_counter(), time.process_time()
            complete_texture(assets.generator, paf, visible, assets.template.texel_valid, assets.model["ship_output"])
            seconds["complete"], cpu_seconds["complete"] = time.perf_counter() - tick, time.process_time() - cpu_tick
            for record in (seconds, cpu_seconds):
                record["total"] = sum(record[key] for key in ("read", "find", "fit", "sample", "complete"))
            if round_:  # the first round warms caches (dlib's CNN, torch's convolutions)
                for key in keys:
                    phases[key].append(seconds[key])
                    cpu[key].append(cpu_seconds[key])
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    split = ", ".join(f"{key} {1000 * float(np.median(phases[key])):.0f} ({1000 * float(np.median(cpu[key])):.0f})"
                      for key in keys)
    return (f"reconstruct, one face in a {photo.shape[1]}x{photo.shape[0]} JPEG ({example}; found by {face.detector}), "
            f"median ms of {repeats} rounds, wall (CPU): {split}; on {os.cpu_count()} cores "
            f"({platform.processor() or platform.machine()}), load average {load}")
