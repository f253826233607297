"""`headtex blend`: data/pafs (+ data/faces truth) -> data/textures/{train,test}, metrics/blend.json."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headtex.blend.core import (
    REJECTION_REASONS, BlendParams, Blended, colour_features, enclosed_holes, gate_reasons, robust_z, thirds_texture,
    visibility_texture,
)
from headtex.datasets import (
    FACES, PAFS, TEXTURES, ShardWriter, held_out_identities, present_identities, read_index, read_shard, read_valid,
    split_identities, write_index,
)
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.masking import is_visible
from headtex.metrics import region_psnr, region_ssim
from headtex.params import load_params, section
from headtex.pool import open_executor

PAF_KEYS = ("identity", "view", "paf", "visible", "view_cosine")
SPLITS = ("train", "test")


@dataclass
class Task:
    """One worker's share: some identities of one pafs shard, and the faces shards with their truth."""

    pafs: Path
    entry: dict  # the pafs shard's index entry
    identities: list[int]
    truth: list[tuple[Path, dict]]  # (faces folder, index entry) holding these identities' lit textures
    preview: set[int]
    valid: np.ndarray
    config: BlendParams


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
    arrays = read_shard(task.pafs, task.entry, PAFS, PAF_KEYS)
    truth = {}
    for folder, entry in task.truth:
        faces = read_shard(folder, entry, FACES, ("identity_ids", "lit_texture"))
        truth.update({int(i): t for i, t in zip(faces["identity_ids"], faces["lit_texture"])})
    return [_blend_one(identity, arrays, truth.get(identity), task) for identity in task.identities]


def _blend_one(identity: int, arrays: dict[str, np.ndarray], truth: np.ndarray | None, task: Task) -> dict:
    """One identity: its texture, what the gate needs, its fidelity against the truth, its preview row."""
    rows = np.flatnonzero(arrays["identity"] == identity)
    blended = blend_identity(arrays["paf"][rows], is_visible(arrays["visible"][rows]), arrays["view_cosine"][rows] / 255.0,
                             arrays["view"][rows], task.valid, task.config)
    result = {"identity": identity}
    if blended is None:
        return result
    chosen = blended[task.config.method]
    result.update(
        texture=chosen.texture,
        unseen_fraction=float((task.valid & ~chosen.seen).sum() / task.valid.sum()),
        hole_fraction=float(enclosed_holes(chosen.seen, task.valid).sum() / task.valid.sum()),
        seams=chosen.seams,
        colour=colour_features(chosen.texture, task.valid),
        unseen_texels={m: int((task.valid & ~b.seen).sum()) for m, b in blended.items()},
    )
    if truth is not None:
        result["psnr"] = {m: region_psnr(b.texture, truth, task.valid) for m, b in blended.items()}
        result["ssim"] = {m: region_ssim(b.texture, truth, task.valid) for m, b in blended.items()}
    if identity in task.preview:
        position = {int(v): k for k, v in enumerate(arrays["view"][rows])}
        row = [arrays["paf"][rows][position[v]] for v in task.config.views]
        row += [blended["thirds"].texture, blended["visibility"].texture] + ([truth] if truth is not None else [])
        result["preview"] = np.hstack(row)
    return result


def _truth_shards(faces: Path | None) -> dict[int, tuple[Path, dict]]:
    """identity -> (faces folder, index entry of the shard holding its true lit texture); empty without truth."""
    if faces is None:
        return {}
    index = read_index(faces, FACES)
    if not index.get("has_truth", False):
        return {}
    return {int(i): (Path(faces).resolve(), entry) for entry in index["shards"] for i in entry["identities"]}


def _tasks(pafs: Path, index: dict, keep: set[int], truth: dict[int, tuple[Path, dict]], preview: set[int],
           valid: np.ndarray, config: BlendParams, workers: int) -> list[Task]:
    """Identities in index order, split into chunks so every worker gets a few even with one shard."""
    per_shard = [(entry, [int(i) for i in entry["identities"] if int(i) in keep]) for entry in index["shards"]]
    total = sum(len(ids) for _, ids in per_shard)
    chunk = max(1, -(-total // (4 * max(workers, 1))))
    tasks = []
    for entry, ids in per_shard:
        for k in range(0, len(ids), chunk):
            part = ids[k:k + chunk]
            shards = {truth[i][1]["file"]: truth[i] for i in part if i in truth}
            tasks.append(Task(Path(pafs).resolve(), entry, part, [shards[name] for name in sorted(shards)], preview,
                              valid, config))
    return tasks


def _split(pafs: Path, index: dict, config: BlendParams) -> tuple[dict[int, str], np.ndarray]:
    """identity -> "train" | "test" for every identity blend uses, and the mask bank's held-out ids."""
    present = present_identities(index)
    try:
        held_out = held_out_identities(present, config.mask_identities)
        train_ids, test_ids = split_identities(present, held_out, config.test_identities, config.seed)
    except ValueError as error:
        raise UserError(f"{pafs}: {error}; lower masks.identities / blend.test_identities or add identities") from None
    views_per_identity = index.get("views_per_identity")
    if views_per_identity is not None and max(config.views) >= views_per_identity:
        raise UserError(f"params.yaml: blend.views {config.views} but {pafs} has {views_per_identity} views per identity")
    return {**{int(i): "train" for i in train_ids}, **{int(i): "test" for i in test_ids}}, held_out


def _gate(records: list[dict], config: BlendParams) -> dict[int, list[str]]:
    """identity -> why the automatic gate rejects its texture (empty: kept); colour statistics need everyone."""
    blended = [r for r in records if "colour" in r]
    colour_z = np.abs(robust_z(np.stack([r["colour"] for r in blended]))).max(1) if blended else np.zeros(0)
    reasons = {r["identity"]: ["missing_views"] for r in records if "colour" not in r}
    for record, z in zip(blended, colour_z):
        record["colour_z"] = float(z)
        reasons[record["identity"]] = gate_reasons(record["unseen_fraction"], record["hole_fraction"],
                                                   record["seams"], float(z), config)
    return reasons


def _keep_accepted(pending: Path, entries: list[dict], folder: Path, reasons: dict[int, list[str]],
                   shard_size: int) -> list[dict]:
    """Copy the textures the gate accepts from the pending shards into folder's shards; returns their entries."""
    writer = ShardWriter(folder, shard_size)
    for entry in entries:
        arrays = read_shard(pending, entry, TEXTURES)
        for texture, identity in zip(arrays["textures"], arrays["identity"]):
            if not reasons[int(identity)]:
                writer.add({"textures": texture[None], "identity": np.array([identity], dtype=np.int64)})
    writer.flush()
    folder.mkdir(parents=True, exist_ok=True)
    return writer.entries


def run(params_path: Path, pafs: Path, faces: Path | None, template: Path, out: Path, metrics_path: Path,
        workers: int = 0, timing_path: Path | None = None) -> dict:
    started = time.perf_counter()
    config = section(load_params(params_path), "blend", BlendParams)
    valid = read_valid(Path(template) / "valid.png", config.uv_size)
    index = read_index(pafs, PAFS)
    split_of, held_out = _split(pafs, index, config)
    truth = _truth_shards(faces)
    preview = set(sorted(i for i, split in split_of.items() if split == "test")[:config.preview_identities])

    with open_executor(workers, "blend") as executor, atomic_dir(out) as staging:
        tasks = _tasks(pafs, index, set(split_of), truth, preview, valid, config, executor.workers)
        pending = staging / "pending"  # textures wait here until the dataset-wide colour statistics are known
        writers = {split: ShardWriter(pending / split, config.shard_size) for split in SPLITS}
        records, previews = [], []
        for results in executor.map(_blend_task, tasks, "blend"):
            for result in results:
                split = split_of[result["identity"]]
                if "texture" in result:
                    writers[split].add({"textures": result.pop("texture")[None],
                                        "identity": np.array([result["identity"]], dtype=np.int64)})
                if "preview" in result:
                    previews.append((result["identity"], result.pop("preview")))
                records.append({**result, "split": split})
        reasons = _gate(records, config)
        written = {}
        for split, writer in writers.items():
            writer.flush()
            entries = _keep_accepted(pending / split, writer.entries, staging / split, reasons, config.shard_size)
            write_index(staging / split, entries, split=split, method=config.method, views=config.views,
                        uv_size=config.uv_size, valid="models/template/valid.png", seed=config.seed,
                        held_out_identities=[int(i) for i in held_out], count=sum(e["count"] for e in entries),
                        rejected={str(i): r for i, r in sorted(reasons.items()) if r and split_of[i] == split})
            written[split] = sum(e["count"] for e in entries)
        shutil.rmtree(pending, ignore_errors=True)
        # Preview rows: the `views` PAFs | thirds | visibility | truth (when known), test identities.
        previews.sort(key=lambda p: p[0])
        for identity, row in previews:
            write_png(staging / "preview" / f"test-{identity:06d}.png", row)
        if previews:
            write_png(staging / "preview" / "grid.png", np.vstack([row for _, row in previews]))

    metrics = blend_metrics(records, reasons, written, held_out, split_of, config, has_truth=bool(truth))
    seconds = time.perf_counter() - started
    write_json(metrics_path, metrics)
    if timing_path is not None:
        write_json(timing_path, {**executor.facts(), "seconds": round(seconds, 2),
                                 "identities_per_second": round(len(records) / max(seconds, 1e-9), 2)})
    return metrics


def _summary(values: list[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"mean": None, "median": None}
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4)}


def blend_metrics(records: list[dict], reasons: dict[int, list[str]], written: dict[str, int], held_out: np.ndarray,
                  split_of: dict[int, str], config: BlendParams, has_truth: bool) -> dict:
    """metrics/blend.json: counts, rejections by reason, gate statistics and fidelity against the truth."""
    blended = [r for r in records if "colour" in r]
    rejected = {reason: sum(reason in r for r in reasons.values()) for reason in REJECTION_REASONS}
    measured = [r for r in records if "psnr" in r]
    fidelity = "no ground truth (data/faces has_truth is false)"
    if has_truth and measured:
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
    splits = list(split_of.values())
    return {
        "method": config.method,
        "views": config.views,
        "identities": {"present": len(split_of) + int(len(held_out)), "mask_bank": int(len(held_out)),
                       "train": splits.count("train"), "test": splits.count("test")},
        "written": written,
        "rejected": {"total": sum(bool(r) for r in reasons.values()), **rejected},
        "unseen_texels_mean": {m: round(float(np.mean([r["unseen_texels"][m] for r in blended])), 1) if blended else None
                               for m in ("thirds", "visibility")},
        "unseen_fraction": _summary([r["unseen_fraction"] for r in blended]),
        "hole_fraction": _summary([r["hole_fraction"] for r in blended]),
        "seam_ratio": _summary([r["seams"] for r in blended]),
        "colour_z": _summary([r["colour_z"] for r in blended]),
        "fidelity": fidelity,
    }
