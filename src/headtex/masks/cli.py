"""`headtex masks`: the visibility masks of held-out identities in data/pafs -> data/masks, metrics/masks.json."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from headtex.io import SHARD_PATTERN, UserError, atomic_dir, read_index, read_png, save_npz, write_index, write_json, write_png
from headtex.masks.core import (
    HISTOGRAM_PURPOSE, MasksParams, coverage_histogram, free_form_mask, held_out_identities, mask_grid, missing_share,
    pick_bank,
)
from headtex.params import UVParams, load_params, section

PREVIEW_MASKS = 16  # per kind (real, free-form) in preview/masks.png


def _held_out_records(pafs: Path, index: dict, held_out: set[int], uv_size: int) -> dict[str, np.ndarray]:
    """identity, view and visible of every record of the held-out identities (only their shards are read)."""
    parts = {"identity": [], "view": [], "visible": []}
    for entry in index["shards"]:
        if not held_out & {int(i) for i in entry["identities"]}:
            continue
        path = Path(pafs) / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as data:
                identity = data["identity"]
                rows = np.flatnonzero(np.isin(identity, list(held_out)))
                parts["identity"].append(identity[rows])
                parts["view"].append(data["view"][rows])
                parts["visible"].append(data["visible"][rows])
        except (OSError, KeyError, ValueError) as error:
            raise UserError(f"{path}: unreadable pafs shard ({error.__class__.__name__}: {error})") from None
    records = {key: np.concatenate(value) for key, value in parts.items()}
    if records["visible"].shape[1:] != (uv_size, uv_size):
        raise UserError(f"{pafs}: visibility masks are {records['visible'].shape[1]} texels, uv.size is {uv_size}; rerun pafs")
    return records


def run(params_path: Path, pafs: Path, template: Path, out: Path, metrics_path: Path) -> dict:
    params = load_params(params_path)
    uv = section(params, "uv", UVParams)
    config = section(params, "masks", MasksParams, uv_size=uv.size)
    started = time.perf_counter()

    valid = read_png(Path(template) / "valid.png") > 127
    index = read_index(pafs)
    present = sorted({int(i) for entry in index["shards"] for i in entry["identities"]})
    try:
        held_out = held_out_identities(np.array(present, dtype=np.int64), config.identities)
    except ValueError as error:
        raise UserError(f"{pafs}: {error}; lower masks.identities or add identities") from None
    records = _held_out_records(pafs, index, set(int(i) for i in held_out), uv.size)
    try:
        chosen = pick_bank(records["identity"], records["view"], config.count, config.seed)
    except ValueError as error:
        raise UserError(f"params.yaml [masks]: {error}") from None
    bank = np.where(records["visible"][chosen] > 127, 255, 0).astype(np.uint8)
    identity, view = records["identity"][chosen].astype(np.int64), records["view"][chosen].astype(np.int16)

    free_form = np.stack([
        free_form_mask(np.random.default_rng([config.seed, k, HISTOGRAM_PURPOSE]), uv.size, config.max_strokes)
        for k in range(config.histogram_samples)
    ])
    real_share, free_share = missing_share(bank, valid), missing_share(free_form, valid)

    with atomic_dir(out) as staging:
        shards = []
        for start in range(0, len(bank), config.shard_size):
            part = slice(start, start + config.shard_size)
            name = SHARD_PATTERN.format(len(shards))
            save_npz(staging / name, masks=bank[part], identity=identity[part], view=view[part])
            shards.append({"file": name, "identities": sorted({int(i) for i in identity[part]}),
                           "count": int(len(identity[part]))})
        write_index(staging, shards, uv_size=uv.size, count=int(len(bank)), held_out_identities=[int(i) for i in held_out],
                    source="data/pafs visible (255 = visible)", p_real=config.p_real, max_strokes=config.max_strokes,
                    seed=config.seed)
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
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(metrics_path, metrics)
    return metrics
