"""`headtex blend`: data/pafs (+ data/faces truth) -> data/textures/{train,test}, metrics/blend.json."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headtex.blend.core import (
    REJECTION_REASONS, BlendParams, Blended, colour_features, enclosed_holes, gate_reasons, robust_z, split_identities,
    thirds_texture, visibility_texture,
)
from headtex.io import SHARD_PATTERN, UserError, atomic_dir, read_index, read_png, save_npz, write_index, write_json, write_png
from headtex.masks.core import MasksParams, held_out_identities
from headtex.metrics import region_psnr, region_ssim
from headtex.params import UVParams, load_params, section
from headtex.pool import default_workers, parallel_map

PAF_KEYS = ("identity", "view", "paf", "visible", "view_cosine")


@dataclass
class Task:
    """One worker's share: some identities of one pafs shard, and where their truth lies."""

    pafs_shard: Path
    identities: list[int]
    truth_shards: dict[int, Path]  # identity -> faces shard with its lit_texture (empty without truth)
    preview: set[int]
    valid: np.ndarray
    config: BlendParams


def load_keys(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Only some arrays of a shard (np.load reads .npz members lazily; the faces images stay on disk)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
            return {key: data[key] for key in keys}
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable shard ({error.__class__.__name__})") from None


def blend_identity(paf: np.ndarray, visible: np.ndarray, cosine: np.ndarray, view: np.ndarray, valid: np.ndarray,
                   config: BlendParams) -> dict[str, Blended] | None:
    """Both methods for one identity's views (records in any order); None when one of `views` is missing."""
    position = {int(v): k for k, v in enumerate(view)}
    if any(v not in position for v in config.views):
        return None
    chosen = [position[v] for v in config.views]
    thirds = thirds_texture(paf[chosen], visible[chosen], valid, config.inpaint_radius)
    weighted = visibility_texture(paf, visible, cosine, valid, config.cosine_power, config.feather_texels,
                                  config.pyramid_levels, config.inpaint_radius)
    return {"thirds": thirds, "visibility": weighted}


def _blend_task(task: Task) -> list[dict]:
    """Worker: blend every identity of the task; measure both methods against the truth."""
    arrays = load_keys(task.pafs_shard, PAF_KEYS)
    truth = {}
    for path in sorted(set(task.truth_shards.values())):
        faces = load_keys(path, ("identity_ids", "lit_texture"))
        truth.update({int(i): t for i, t in zip(faces["identity_ids"], faces["lit_texture"])})
    results = []
    for identity in task.identities:
        rows = np.flatnonzero(arrays["identity"] == identity)
        visible = arrays["visible"][rows] > 127
        blended = blend_identity(arrays["paf"][rows], visible, arrays["view_cosine"][rows] / 255.0,
                                 arrays["view"][rows], task.valid, task.config)
        result = {"identity": identity}
        if blended is None:
            results.append(result)
            continue
        chosen = blended[task.config.method]
        unseen = task.valid & ~chosen.seen
        result.update(
            texture=chosen.texture,
            unseen_fraction=float(unseen.sum() / task.valid.sum()),
            hole_fraction=float(enclosed_holes(chosen.seen, task.valid).sum() / task.valid.sum()),
            seams=chosen.seams,
            colour=colour_features(chosen.texture, task.valid),
            unseen_texels={m: int((task.valid & ~b.seen).sum()) for m, b in blended.items()},
        )
        if identity in truth:
            result["psnr"] = {m: region_psnr(b.texture, truth[identity], task.valid) for m, b in blended.items()}
            result["ssim"] = {m: region_ssim(b.texture, truth[identity], task.valid) for m, b in blended.items()}
        if identity in task.preview:
            position = {int(v): k for k, v in enumerate(arrays["view"][rows])}
            row = [arrays["paf"][rows][position[v]] for v in task.config.views]
            row += [blended["thirds"].texture, blended["visibility"].texture]
            if identity in truth:
                row.append(truth[identity])
            result["preview"] = np.hstack(row)
        results.append(result)
    return results


def _truth_shards(faces: Path | None) -> tuple[dict[int, Path], bool]:
    """identity -> faces shard holding its true lit texture; empty when the faces have no truth."""
    if faces is None:
        return {}, False
    index = read_index(faces)
    if not index.get("has_truth", False):
        return {}, False
    return {int(i): Path(faces) / entry["file"] for entry in index["shards"] for i in entry["identities"]}, True


def _tasks(pafs: Path, index: dict, keep: set[int], truth: dict[int, Path], preview: set[int], valid: np.ndarray,
           config: BlendParams, workers: int) -> list[Task]:
    """Identities in index order, split into chunks so every worker gets a few even with one shard."""
    per_shard = [(Path(pafs) / e["file"], [int(i) for i in e["identities"] if int(i) in keep]) for e in index["shards"]]
    total = sum(len(ids) for _, ids in per_shard)
    chunk = max(1, -(-total // (4 * max(workers, 1))))
    return [
        Task(path, ids[k:k + chunk], {i: truth[i] for i in ids[k:k + chunk] if i in truth}, preview, valid, config)
        for path, ids in per_shard for k in range(0, len(ids), chunk)
    ]


def _summary(values: list[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"mean": None, "median": None}
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4)}


def _flush(folder: Path, shards: list[dict], textures: list[np.ndarray], identities: list[int]) -> None:
    """Write one shard of textures and record it in `shards`."""
    name = SHARD_PATTERN.format(len(shards))
    save_npz(folder / name, textures=np.stack(textures), identity=np.asarray(identities, dtype=np.int64))
    shards.append({"file": name, "identities": [int(i) for i in identities], "count": len(identities)})


def run(params_path: Path, pafs: Path, faces: Path | None, template: Path, out: Path, metrics_path: Path,
        workers: int = 0) -> dict:
    params = load_params(params_path)
    uv = section(params, "uv", UVParams)
    # The one shared key of the masks section: how many identities the mask bank holds out.
    mask_identities = int((params.get("masks") or {}).get("identities", MasksParams.identities))
    config = section(params, "blend", BlendParams, mask_identities=mask_identities, uv_size=uv.size)
    started = time.perf_counter()

    valid = read_png(Path(template) / "valid.png") > 127
    if valid.shape != (uv.size, uv.size):
        raise UserError(f"{template}/valid.png: {valid.shape[0]}x{valid.shape[1]} texels, but uv.size is {uv.size}; "
                        "rerun `headtex template`")
    index = read_index(pafs)
    present = np.array(sorted({int(i) for entry in index["shards"] for i in entry["identities"]}), dtype=np.int64)
    try:
        held_out = held_out_identities(present, config.mask_identities)
        train_ids, test_ids = split_identities(present, held_out, config.test_identities, config.seed)
    except ValueError as error:
        raise UserError(f"{pafs}: {error}; lower masks.identities / blend.test_identities or add identities") from None
    views_per_identity = index.get("views_per_identity")
    if views_per_identity is not None and max(config.views) >= views_per_identity:
        raise UserError(f"params.yaml [blend]: views {config.views} but {pafs} has {views_per_identity} views per identity")
    truth, has_truth = _truth_shards(faces)
    split_of = {**{int(i): "train" for i in train_ids}, **{int(i): "test" for i in test_ids}}
    preview = set(int(i) for i in test_ids[:config.preview_identities])
    workers = workers if workers > 0 else default_workers()
    tasks = _tasks(pafs, index, set(split_of), truth, preview, valid, config, workers)

    with atomic_dir(out) as staging:
        pending = staging / "pending"  # textures wait here until the dataset-wide colour statistics are known
        buffers = {"train": ([], []), "test": ([], [])}
        pending_shards = {"train": [], "test": []}
        records, previews = [], []
        for results in parallel_map(_blend_task, tasks, workers, description="blend"):
            for result in results:
                split = split_of[result["identity"]]
                if "texture" in result:
                    textures, ids = buffers[split]
                    textures.append(result.pop("texture"))
                    ids.append(result["identity"])
                    if len(ids) == config.shard_size:
                        _flush(pending / split, pending_shards[split], textures, ids)
                        buffers[split] = ([], [])
                if "preview" in result:
                    previews.append((result["identity"], result.pop("preview")))
                records.append({**result, "split": split})
        for split, (textures, ids) in buffers.items():
            if ids:
                _flush(pending / split, pending_shards[split], textures, ids)

        # Quality gate over the whole dataset (colour statistics need everyone).
        blended = [r for r in records if "colour" in r]
        colour_z = np.abs(robust_z(np.stack([r["colour"] for r in blended]))).max(1) if blended else np.zeros(0)
        reasons = {r["identity"]: ["missing_views"] for r in records if "colour" not in r}
        for record, z in zip(blended, colour_z):
            record["colour_z"] = float(z)
            reasons[record["identity"]] = gate_reasons(record["unseen_fraction"], record["hole_fraction"],
                                                       record["seams"], float(z), config)
        written = {}
        for split in ("train", "test"):
            shards, textures, ids = [], [], []
            for entry in pending_shards[split]:
                arrays = load_keys(pending / split / entry["file"], ("textures", "identity"))
                for texture, identity in zip(arrays["textures"], arrays["identity"]):
                    if reasons[int(identity)]:
                        continue
                    textures.append(texture)
                    ids.append(int(identity))
                    if len(ids) == config.shard_size:
                        _flush(staging / split, shards, textures, ids)
                        textures, ids = [], []
            if ids:
                _flush(staging / split, shards, textures, ids)
            (staging / split).mkdir(exist_ok=True)
            write_index(staging / split, shards, split=split, method=config.method, views=config.views,
                        uv_size=uv.size, valid="models/template/valid.png", seed=config.seed,
                        held_out_identities=[int(i) for i in held_out], count=sum(s["count"] for s in shards),
                        rejected={str(i): r for i, r in sorted(reasons.items()) if r and split_of[i] == split})
            written[split] = sum(s["count"] for s in shards)
        shutil.rmtree(pending, ignore_errors=True)
        # Preview rows: the `views` PAFs | thirds | visibility | truth (when known), test identities.
        previews.sort(key=lambda p: p[0])
        for identity, row in previews:
            write_png(staging / "preview" / f"test-{identity:06d}.png", row)
        if previews:
            write_png(staging / "preview" / "grid.png", np.vstack([row for _, row in previews]))

    seconds = time.perf_counter() - started
    rejected = {reason: sum(reason in r for r in reasons.values()) for reason in REJECTION_REASONS}
    fidelity = None
    measured = [r for r in records if "psnr" in r]
    if measured:
        fidelity = {
            "identities": len(measured),
            "region": "models/template/valid.png",
            **{m: {"psnr_db": _summary([r["psnr"][m] for r in measured]), "ssim": _summary([r["ssim"][m] for r in measured])}
               for m in ("thirds", "visibility")},
            "visibility_minus_thirds_psnr_db": round(float(np.mean([r["psnr"]["visibility"] - r["psnr"]["thirds"]
                                                                    for r in measured])), 4),
            "visibility_better_share": round(float(np.mean([r["psnr"]["visibility"] > r["psnr"]["thirds"]
                                                            for r in measured])), 4),
        }
    metrics = {
        "method": config.method,
        "views": config.views,
        "identities": {"present": int(len(present)), "mask_bank": int(len(held_out)), "train": int(len(train_ids)),
                       "test": int(len(test_ids))},
        "written": written,
        "rejected": {"total": sum(bool(r) for r in reasons.values()), **rejected},
        "unseen_texels_mean": {m: round(float(np.mean([r["unseen_texels"][m] for r in blended])), 1) if blended else None
                               for m in ("thirds", "visibility")},
        "unseen_fraction": _summary([r["unseen_fraction"] for r in blended]),
        "hole_fraction": _summary([r["hole_fraction"] for r in blended]),
        "seam_ratio": _summary([r["seams"] for r in blended]),
        "colour_z": _summary([r["colour_z"] for r in blended]),
        "fidelity": fidelity if has_truth else "no ground truth (data/faces has_truth is false)",
        "seconds": round(seconds, 2),
        "identities_per_second": round(len(records) / max(seconds, 1e-9), 2),
    }
    write_json(metrics_path, metrics)
    return metrics
