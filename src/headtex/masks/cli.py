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

PREVIEW_MASKS = 16  # per kind (real, free-form) in preview/masks.png


def _held_out_records(pafs: Path, index: dict, held_out: set[int], uv_size: int) -> dict[str, np.ndarray]:
    """identity, view and visible of every record of the held-out identities (only their shards are read)."""
    parts = {"identity": [], "view": [], "visible": []}
    for entry in index["shards"]:
        if not held_out & {int(i) for i in entry["identities"]}:
            continue
        arrays = read_shard(pafs, entry, PAFS, ("identity", "view", "visible"))
        rows = np.flatnonzero(np.isin(arrays["identity"], list(held_out)))
        for key in parts:
            parts[key].append(arrays[key][rows])
    records = {key: np.concatenate(value) for key, value in parts.items()}
    if records["visible"].shape[1:] != (uv_size, uv_size):
        raise UserError(f"{pafs}: visibility masks are {records['visible'].shape[1]} texels, uv.size is {uv_size}; rerun pafs")
    return records


def run(params_path: Path, pafs: Path, template: Path, out: Path, metrics_path: Path,
        timing_path: Path | None = None) -> dict:
    started = time.perf_counter()
    config = section(load_params(params_path), "masks", MasksParams)
    valid = read_valid(Path(template) / "valid.png", config.uv_size)
    index = read_index(pafs, PAFS)
    try:
        held_out = held_out_identities(present_identities(index), config.identities)
    except ValueError as error:
        raise UserError(f"{pafs}: {error}; lower masks.identities or add identities") from None
    records = _held_out_records(pafs, index, set(int(i) for i in held_out), config.uv_size)
    try:
        chosen = pick_bank(records["identity"], records["view"], config.count, config.seed)
    except ValueError as error:
        raise UserError(f"params.yaml: masks.count: {error}") from None
    bank = np.where(is_visible(records["visible"][chosen]), 255, 0).astype(np.uint8)
    identity, view = records["identity"][chosen].astype(np.int64), records["view"][chosen].astype(np.int16)

    free_form = np.stack([
        free_form_mask(np.random.default_rng([config.seed, k, HISTOGRAM_PURPOSE]), config.uv_size, config.max_strokes)
        for k in range(config.histogram_samples)
    ])
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
        write_json(timing_path, {"seconds": round(time.perf_counter() - started, 2)})
    return metrics
