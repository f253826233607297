"""masks: held-out identities, the real mask bank, the free-form stroke generator, the stage."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from headtex.datasets import MASKS, read_index, write_index
from headtex.io import UserError, load_npz, save_npz, write_png
from headtex import masking
from headtex.datasets import held_out_identities
from headtex.masks import core

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def test_free_form_masks_follow_the_port():
    rng = np.random.default_rng(0)
    masks = np.stack([masking.free_form_mask(rng, 192) for _ in range(300)])
    assert masks.shape == (300, 192, 192) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 255}
    missing = (masks == 0).mean(axis=(1, 2))
    assert missing.min() > 0  # never empty, even when a draw has no stroke
    assert 0.02 < np.median(missing) < 0.4  # strokes, not blobs: 5-14 px brushes, 10-49 px segments at 256 px
    first = masking.free_form_mask(np.random.default_rng(0), 192)
    assert np.array_equal(first, masking.free_form_mask(np.random.default_rng(0), 192))  # seeded = reproducible
    few = np.stack([masking.free_form_mask(rng, 192, max_strokes=2) for _ in range(300)])
    assert (few == 0).mean() < 0.5 * (masks == 0).mean()  # max_strokes bounds the number of strokes


def test_a_single_stroke_is_a_bounded_brush_line():
    # One stroke = 1-5 joined segments of 10-49 px under a 5-14 px brush (at 256 px); a stroke may leave the
    # canvas and come back, so it is mostly, not always, one blob.
    rng = np.random.default_rng(3)
    blobs = []
    for _ in range(100):
        missing = masking.free_form_mask(rng, 256, max_strokes=1) == 0
        blobs.append(cv2.connectedComponents(missing.astype(np.uint8))[0] - 1)
        assert 0 < missing.sum() <= 5 * (14 * 49 + 14 * 14)  # at most 5 of the longest segments, widest brush
    assert np.mean(np.array(blobs) == 1) > 0.8


def test_draw_training_mask_mixes_real_and_free_form():
    bank = np.full((3, SIZE, SIZE), 255, np.uint8)
    for k in range(3):
        bank[k, :, k * 10:(k + 1) * 10] = 0  # three recognisable bank masks
    rng = np.random.default_rng(1)
    draws = [masking.draw_training_mask(rng, bank, p_real=0.8) for _ in range(2000)]
    real = np.mean([any(np.array_equal(d, b) for b in bank) for d in draws])
    assert abs(real - 0.8) < 0.03  # binomial sd is 0.009
    assert all(d.shape == (SIZE, SIZE) for d in draws)
    assert all(not any(np.array_equal(d, b) for b in bank) for d in
               (masking.draw_training_mask(rng, bank, p_real=0.0) for _ in range(20)))
    with pytest.raises(ValueError, match="empty"):
        masking.draw_training_mask(rng, bank[:0], p_real=1.0, size=SIZE)
    assert masking.draw_training_mask(rng, bank[:0], p_real=0.0, size=SIZE).shape == (SIZE, SIZE)


def test_blob_masks_hide_part_of_what_is_seen_and_mix_with_the_bank():
    """A blob draw is a bank mask (all it hides stays hidden) plus 1-4 ellipses centred where it shows the head:
    holes inside a seen face, as the real-face evaluation makes them."""
    valid = np.zeros((SIZE, SIZE), bool)
    valid[8:56, 8:56] = True
    bank = np.full((2, SIZE, SIZE), 255, np.uint8)
    bank[:, :, :32] = 0  # the left half unseen
    rng = np.random.default_rng(2)
    kinds = {"bank": 0, "blob": 0, "free_form": 0}
    for _ in range(600):
        mask = masking.draw_training_mask(rng, bank, p_real=0.3, size=SIZE, p_blob=0.5, valid=valid)
        if np.array_equal(mask, bank[0]):
            kinds["bank"] += 1
        elif (mask[:, :32] == 0).all():  # the bank's hidden half, and more
            assert (mask[:, 32:] == 0).any()
            kinds["blob"] += 1
        else:
            kinds["free_form"] += 1
    assert abs(kinds["bank"] / 600 - 0.3) < 0.06 and abs(kinds["blob"] / 600 - 0.5) < 0.06
    inside = np.zeros((SIZE, SIZE), bool)
    inside[30:34, 40:44] = True
    blob = masking.blob_mask(np.random.default_rng(0), inside) == 0
    assert blob[30:34, 40:44].any() and blob.sum() < SIZE * SIZE / 2
    with pytest.raises(ValueError, match="valid region"):
        masking.draw_training_mask(np.random.default_rng(0), bank, p_real=0.0, size=SIZE, p_blob=1.0)


def test_held_out_identities_are_the_highest_ids():
    assert held_out_identities(np.array([9, 3, 3, 7, 1, 4]), 2).tolist() == [7, 9]
    with pytest.raises(ValueError):
        held_out_identities(np.arange(4), 4)  # nothing would be left for blend


def test_missing_share_counts_only_the_valid_region():
    valid = np.zeros((SIZE, SIZE), bool)
    valid[:, :32] = True
    masks = np.full((2, SIZE, SIZE), 255, np.uint8)
    masks[0, :, :16] = 0  # half of the valid region
    masks[1, :, 32:] = 0  # only off the head
    np.testing.assert_allclose(masking.missing_share(masks, valid), [0.5, 0.0])
    histogram = core.coverage_histogram(np.array([0.05, 0.5, 0.55, 1.0]))
    assert histogram["counts"] == [1, 0, 0, 0, 0, 2, 0, 0, 0, 1] and len(histogram["bin_edges"]) == 11


# ---------------------------------------------------------------- the stage

def make_pafs(folder: Path, identities: int = 6, views: int = 3) -> Path:
    """A pafs-format dataset whose visibility masks are ellipses, different per identity and view."""
    records = {"identity": [], "view": [], "visible": [], "paf": []}
    for identity in range(identities):
        for view in range(views):
            visible = np.zeros((SIZE, SIZE), np.uint8)
            cv2.ellipse(visible, (16 + 16 * view, 32), (12 + identity, 20), 0, 0, 360, 255, -1)
            records["identity"].append(identity)
            records["view"].append(view)
            records["visible"].append(visible)
            records["paf"].append(np.repeat(visible[..., None], 3, axis=2) // 2)
    ids = [list(range(identities // 2)), list(range(identities // 2, identities))]
    shards = []
    for k, part in enumerate(ids):
        rows = [r for r, i in enumerate(records["identity"]) if i in part]
        save_npz(folder / f"shard-{k:05d}.npz", identity=np.array(records["identity"], np.int64)[rows],
                 view=np.array(records["view"], np.int16)[rows],
                 visible=np.stack(records["visible"])[rows], paf=np.stack(records["paf"])[rows])
        shards.append({"file": f"shard-{k:05d}.npz", "identities": part, "count": len(rows)})
    write_index(folder, shards, views_per_identity=views)
    return folder


@pytest.fixture()
def setup(tmp_path) -> dict:
    template = tmp_path / "template"
    write_png(template / "valid.png", np.full((SIZE, SIZE), 255, np.uint8))
    return {"pafs": make_pafs(tmp_path / "pafs"), "template": template, "tmp": tmp_path}


def write_params(path: Path, **masks) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["uv"]["size"] = SIZE
    params["masks"] = {**params.get("masks", {}), "identities": 2, "histogram_samples": 50, **masks}
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_the_bank_of_the_held_out_identities(setup):
    from headtex.masks.cli import run

    tmp = setup["tmp"]
    metrics = run(write_params(tmp / "params.yaml"), setup["pafs"], setup["template"], tmp / "masks", tmp / "m.json")
    index = read_index(tmp / "masks", MASKS)
    assert index["held_out_identities"] == [4, 5] and index["count"] == 6
    arrays = load_npz(tmp / "masks" / index["shards"][0]["file"])
    assert arrays["identity"].tolist() == [4, 4, 4, 5, 5, 5] and arrays["view"].tolist() == [0, 1, 2] * 2
    assert arrays["masks"].dtype == np.uint8 and set(np.unique(arrays["masks"])) == {0, 255}
    source = load_npz(setup["pafs"] / "shard-00001.npz")
    np.testing.assert_array_equal(arrays["masks"], source["visible"][source["identity"] >= 4])  # white = visible
    assert json.loads((tmp / "m.json").read_text()) == metrics
    real = metrics["missing_share_of_valid_region"]["real"]
    assert sum(real["counts"]) == 6 and 0.5 < real["mean"] < 1.0  # an ellipse is a small part of the square
    assert sum(metrics["missing_share_of_valid_region"]["free_form"]["counts"]) == 50
    assert (tmp / "masks" / "preview" / "real.png").is_file() and (tmp / "masks" / "preview" / "free_form.png").is_file()


def test_stage_count_draws_a_reproducible_subset(setup):
    from headtex.masks.cli import run

    tmp = setup["tmp"]
    for name in ("a", "b"):
        run(write_params(tmp / "params.yaml", count=4), setup["pafs"], setup["template"], tmp / name, tmp / f"{name}.json")
    a, b = (load_npz(tmp / name / "shard-00000.npz") for name in ("a", "b"))
    assert len(a["masks"]) == 4 and np.array_equal(a["masks"], b["masks"])
    assert set(a["identity"].tolist()) <= {4, 5}
    with pytest.raises(UserError, match="count"):
        run(write_params(tmp / "params.yaml", count=7), setup["pafs"], setup["template"], tmp / "c", tmp / "c.json")
    with pytest.raises(UserError, match="identities"):
        run(write_params(tmp / "params.yaml", identities=6), setup["pafs"], setup["template"], tmp / "c", tmp / "c.json")
    assert not (tmp / "c").exists()
