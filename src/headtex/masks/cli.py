"""`headtex masks`: the visibility masks of held-out identities in data/pafs -> data/masks, metrics/masks.json."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from headtex.datasets import (
    PAFS, ShardWriter, held_out_identities, present_identities, read_index, read_shard, read_valid, write_index,
)
from headtex.masking import free_form_mask, is_visible, missing_share
from headtex.io import UserError, atomic_dir, write_json, write_png
from headtex.masks.core import HISTOGRAM_PURPOSE, MasksParams, coverage_histogram, mask_grid, pick_bank
from headtex.params import load_params, section
from headtex.pool import Executor, open_executor

PREVIEW_MASKS = 16  # per kind (real, free-form) in preview/masks.png
FREE_FORM_CHUNK = 100  # free-form draws per task


def _held_out_rows(task: tuple[Path, dict, list[int]]) -> dict[str, np.ndarray]:
    """A worker: identity, view and visible of the held-out identities' records in one pafs shard."""
    pafs, entry, held_out = task
    arrays = read_shard(pafs, entry, PAFS, ("identity", "view", "visible"))
    rows = np.flatnonzero(np.isin(arrays["identity"], held_out))
    return {key: arrays[key][rows] for key in ("identity", "view", "visible")}


def _free_form_draws(task: tuple[int, range, int, int]) -> np.ndarray:
    """A worker: the histogram's free-form masks number k in draws, each from its own seeded generator."""
    seed, draws, size, max_strokes = task
    return np.stack([free_form_mask(np.random.default_rng([seed, k, HISTOGRAM_PURPOSE]), size, max_strokes)
                     for k in draws])


def _held_out_records(pafs: Path, index: dict, held_out: set[int], uv_size: int,
                      executor: Executor) -> dict[str, np.ndarray]:
    """identity, view and visible of every record of the held-out identities (only their shards are read)."""
    tasks = [(Path(pafs).resolve(), entry, sorted(held_out)) for entry in index["shards"]
             if held_out & {int(i) for i in entry["identities"]}]
    parts = list(executor.map(_held_out_rows, tasks, "masks"))
    records = {key: np.concatenate([part[key] for part in parts]) for key in ("identity", "view", "visible")}
    if records["visible"].shape[1:] != (uv_size, uv_size):
        raise UserError(f"{pafs}: visibility masks are {records['visible'].shape[1]} texels, uv.size is {uv_size}; rerun pafs")
    return records


def run(params_path: Path, pafs: Path, template: Path, out: Path, metrics_path: Path,
        timing_path: Path | None = None, workers: int = 0) -> dict:
    started = time.perf_counter()
    config = section(load_params(params_path), "masks", MasksParams)
    valid = read_valid(Path(template) / "valid.png", config.uv_size)
    index = read_index(pafs, PAFS)
    try:
        held_out = held_out_identities(present_identities(index), config.identities)
    except ValueError as error:
        raise UserError(f"{pafs}: {error}; lower masks.identities or add identities") from None
    with open_executor(workers, "masks") as executor:
        records = _held_out_records(pafs, index, set(int(i) for i in held_out), config.uv_size, executor)
        chunks = [(config.seed, range(k, min(k + FREE_FORM_CHUNK, config.histogram_samples)), config.uv_size,
                   config.max_strokes) for k in range(0, config.histogram_samples, FREE_FORM_CHUNK)]
        free_form = np.concatenate(list(executor.map(_free_form_draws, chunks, "masks: free-form")))
    try:
        chosen = pick_bank(records["identity"], records["view"], config.count, config.seed)
    except ValueError as error:
        raise UserError(f"params.yaml: masks.count: {error}") from None
    bank = np.where(is_visible(records["visible"][chosen]), 255, 0).astype(np.uint8)
    identity, view = records["identity"][chosen].astype(np.int64), records["view"][chosen].astype(np.int16)

    real_share, free_share = missing_share(bank, valid), missing_share(free_form, valid)

    with atomic_dir(out) as staging:
        writer = ShardWriter(staging, config.shard_size)
        for person in dict.fromkeys(identity.tolist()):  # the bank is in (identity, view) order
            rows = identity == person
            writer.add({"masks": bank[rows], "identity": identity[rows], "view": view[rows]})
        writer.flush()
        write_index(staging, writer.entries, uv_size=config.uv_size, count=int(len(bank)),
                    held_out_identities=[int(i) for i in held_out], source="data/pafs visible (255 = visible)",
                    p_real=config.p_real, max_strokes=config.max_strokes, seed=config.seed)
        write_png(staging / "preview" / "real.png", mask_grid(bank[:PREVIEW_MASKS]))
        write_png(staging / "preview" / "free_form.png", mask_grid(free_form[:PREVIEW_MASKS]))

    metrics = {
        "identities_held_out": int(len(held_out)),
        "real_masks": int(len(bank)),
        "free_form_samples": int(len(free_form)),
        "p_real": config.p_real,
        "missing_share_of_valid_region": {
            "real": coverage_histogram(real_share),
            "free_form": coverage_histogram(free_share),
        },
    }
    write_json(metrics_path, metrics)
    if timing_path is not None:
        write_json(timing_path, {**executor.facts(), "seconds": round(time.perf_counter() - started, 2)})
    return metrics
