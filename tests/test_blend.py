"""blend: thirds (thesis 3.3, App. A) and visibility blending, the quality gate, the identity split, the stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from headtex.blend import core
from headtex.geometry import Light, rotation_matrix
from headtex.datasets import MASKS, PAFS, TEXTURES, read_index, split_identities, write_index
from headtex.fitting import Fit
from headtex.fitting import partial_texture as pafs_partial_texture
from headtex.io import UserError, load_npz, save_npz
from headtex.metrics import region_psnr
from headtex.geometry.template import default_camera, lit_texture, render_view
from conftest import params_for

REPO = Path(__file__).resolve().parents[1]
YAWS = (-35.0, -15.0, 0.0, 15.0, 35.0)  # fixture views; blend.views [0, 2, 4] = -35°, 0°, +35°
IMAGE_SIZE = 160


# ---------------------------------------------------------------- fixture: pafs/faces-format data made by rendering

def true_texture(template, rng: np.random.Generator) -> np.ndarray:
    """A per-identity lit texture: the template albedo tinted, under a random light."""
    albedo = np.clip(template.albedo * rng.uniform(0.8, 1.15, size=3), 0, 255).astype(np.uint8)
    light = Light(direction=tuple(rng.normal(size=3) * [0.6, 0.4, 0.2] + [0.0, 0.3, 1.0]))
    return lit_texture(albedo, template.vertices, template.faces, template.texel_triangle, template.texel_barycentrics, light)


def partial_texture(template, image: np.ndarray, yaw: float, pitch: float = 0.0, scale_error: float = 0.0,
                    shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(paf, visible, view_cosine) from the pafs stage's own sampler, through a (slightly wrong) pose."""
    scale, translation = default_camera(image.shape[0])
    fit = Fit(rotation_matrix(yaw, pitch), scale * (1.0 + scale_error), translation + np.array([shift, 0.0]),
              np.zeros(len(template.basis_names)))
    return pafs_partial_texture(image, template, fit, max_view_angle_degrees=75.0, depth_tolerance_mm=4.0)


def make_dataset(template, folder: Path, identities: int, seed: int = 0) -> tuple[Path, Path]:
    """Write data/faces-like (identity_ids, lit_texture) and data/pafs-like shards for some identities."""
    faces_dir, pafs_dir = folder / "faces", folder / "pafs"
    truths, records = [], {k: [] for k in ("identity", "view", "paf", "visible", "view_cosine")}
    for identity in range(identities):
        rng = np.random.default_rng([seed, identity])
        truth = true_texture(template, rng)
        truths.append(truth)
        for view, yaw in enumerate(YAWS):
            image, _ = render_view(template, template.vertices, truth, yaw, IMAGE_SIZE)
            error = rng.normal(size=4)  # fitting errors: ~1.5° of pose, 1 % of scale, half a pixel
            paf, visible, cosine = partial_texture(template, image, yaw + 1.5 * error[0], 1.5 * error[1],
                                                   0.01 * error[2], 0.5 * error[3])
            for key, value in zip(records, (identity, view, paf, visible, cosine)):
                records[key].append(value)
    # Two shards each, so that tasks span shards.
    half = identities // 2
    faces_shards, pafs_shards = [], []
    for k, ids in enumerate((range(half), range(half, identities))):
        ids = list(ids)
        save_npz(faces_dir / f"shard-{k:05d}.npz", identity_ids=np.array(ids, np.int64),
                 lit_texture=np.stack([truths[i] for i in ids]))
        faces_shards.append({"file": f"shard-{k:05d}.npz", "identities": ids, "count": len(ids) * len(YAWS)})
        rows = [r for r, i in enumerate(records["identity"]) if i in ids]
        save_npz(pafs_dir / f"shard-{k:05d}.npz",
                 identity=np.array([records["identity"][r] for r in rows], np.int64),
                 view=np.array([records["view"][r] for r in rows], np.int16),
                 **{key: np.stack([records[key][r] for r in rows]) for key in ("paf", "visible", "view_cosine")})
        pafs_shards.append({"file": f"shard-{k:05d}.npz", "identities": ids, "count": len(rows)})
    write_index(faces_dir, faces_shards, source="synthetic", has_truth=True, yaw_degrees=list(YAWS),
                views_per_identity=len(YAWS), uv_size=int(template.albedo.shape[0]))
    write_index(pafs_dir, pafs_shards, views_per_identity=len(YAWS))
    return faces_dir, pafs_dir


def write_params(path: Path, **blend) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["blend"] = {**params.get("blend", {}), "views": [0, 2, 4], "test_identities": 2, **blend}
    params["masks"] = {**params.get("masks", {}), "identities": 2}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def dataset(template, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("blend_data")
    faces_dir, pafs_dir = make_dataset(template, folder, identities=7)
    valid_dir = folder / "template"
    valid_dir.mkdir()
    from headtex.io import write_png

    write_png(valid_dir / "valid.png", template.texel_valid.astype(np.uint8) * 255)
    return {"folder": folder, "faces": faces_dir, "pafs": pafs_dir, "template": valid_dir}


def identity_views(pafs_dir: Path, identity: int):
    for entry in read_index(pafs_dir, PAFS)["shards"]:
        if identity in entry["identities"]:
            arrays = load_npz(pafs_dir / entry["file"])
            rows = arrays["identity"] == identity
            return arrays["paf"][rows], arrays["visible"][rows] > 127, arrays["view_cosine"][rows] / 255.0


# ---------------------------------------------------------------- thirds

def smooth_texture(size: int = 192, seed: int = 0) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32) * 255
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 4) * 4 - 384, 0, 255).astype(np.uint8)


def test_thirds_of_three_identical_textures_is_that_texture():
    texture = smooth_texture()
    blended = core.thirds_blend(texture, texture, texture)
    assert blended.shape == texture.shape and blended.dtype == np.uint8
    assert np.abs(blended.astype(int) - texture).max() <= 2


def test_thirds_takes_the_whole_centre_third_from_the_centre_view():
    # The side views are garbage in their top and bottom rows (as PAFs are at the crown and neck).
    # App. A's mask spans the full height; seamlessClone zeroes its outer ring and erodes it, so those
    # rows of the centre third stay the side view's. Ours meets the side views only at the third's
    # left and right edges (their garbage corners leak in a little).
    import cv2

    texture = smooth_texture()
    side = texture.copy()
    side[:2] = side[-2:] = 0
    mask = np.zeros((192, 192), np.uint8)
    mask[:, 64:128] = 255
    listing = cv2.seamlessClone(texture, side, mask, (96, 96), cv2.NORMAL_CLONE).astype(int)
    blended = core.thirds_blend(side, texture, side).astype(int)
    for rows in (np.s_[:2], np.s_[-2:]):
        assert np.abs(listing[rows, 80:112] - texture[rows, 80:112]).max() > 100
        assert np.abs(blended[rows, 80:112] - texture[rows, 80:112]).max() <= 16
    # (Poisson follows the boundary: 4 of 192 boundary rows each side are 160 off, ~4 levels on average.)
    assert np.abs(blended[20:-20, 72:120] - texture[20:-20, 72:120]).max() <= 8
    assert (blended[:, :64] == side[:, :64]).all() and (blended[:, 128:] == side[:, 128:]).all()


def test_thirds_assignment_follows_what_each_view_sees(template):
    # Yaw > 0 turns the nose to the image right: the camera sees the head's -x side, the left UV third.
    truth = true_texture(template, np.random.default_rng(0))
    visible = []
    for yaw in (-35.0, 0.0, 35.0):
        image, _ = render_view(template, template.vertices, truth, yaw, IMAGE_SIZE)
        visible.append(partial_texture(template, image, yaw)[1] > 127)
    order = core.assign_thirds(np.stack(visible), template.texel_valid)
    assert order.tolist() == [2, 1, 0]  # left third from +35°, centre from 0°, right from -35°


# ---------------------------------------------------------------- seams

def two_colour_views(size: int = 192):
    """View A sees u < 0.6 in one colour, view B u > 0.4 in another, under the same (frontal) angle."""
    u = (np.arange(size) + 0.5) / size
    visible = np.stack([np.broadcast_to(u < 0.6, (size, size)), np.broadcast_to(u > 0.4, (size, size))])
    colours = np.array([[150, 110, 90], [110, 80, 60]], np.uint8)
    pafs = (visible[..., None] * colours[:, None, None]).astype(np.uint8)
    return pafs, visible, np.ones(visible.shape, np.float32)


def max_step(texture: np.ndarray) -> int:
    texture = texture.astype(int)
    return max(np.abs(np.diff(texture, axis=0)).max(), np.abs(np.diff(texture, axis=1)).max())


def test_seams_are_invisible_on_two_colours():
    pafs, visible, cosine = two_colour_views()
    valid = np.ones(visible.shape[1:], bool)
    step = int(np.abs(pafs[0, 0, 0].astype(int) - pafs[1, 0, -1]).max())  # 40 grey levels apart
    blended = core.visibility_texture(pafs, visible, cosine, valid)
    assert max_step(blended.texture) <= 3 < step
    assert blended.seams < 1.5
    # One naive cut at u = 0.5 is a seam the gate sees.
    label = np.broadcast_to((np.arange(192) >= 96).astype(int), (192, 192))
    cut = np.where(label[..., None] == 0, pafs[0], pafs[1])
    assert core.seam_ratio(cut, label, pafs, valid) > params_for(core.BlendParams, "blend").max_seam_ratio
    # Thirds: the left view in one colour, centre and right in the other; Poisson spreads the change.
    full = np.stack([np.broadcast_to(pafs[0, 0, 0], pafs.shape[1:]), np.broadcast_to(pafs[1, 0, -1], pafs.shape[1:])])
    thirds = core.thirds_blend(full[0], full[1], full[1])
    assert max_step(thirds) <= 3


def test_multiband_blend_of_one_view_is_that_view():
    texture = smooth_texture().astype(np.float32)
    out = core.multiband_blend(texture[None], np.ones((1, 192, 192), np.float32), levels=4)
    np.testing.assert_allclose(out, texture, atol=1e-3)


# ---------------------------------------------------------------- holes and gate

def test_enclosed_holes_and_fill():
    valid = np.zeros((40, 40), bool)
    valid[5:35, 5:35] = True
    seen = valid.copy()
    seen[15:20, 15:20] = False  # enclosed by seen texels
    seen[5:8, :] = False  # a band along the top edge of the region: open, not a hole
    holes = core.enclosed_holes(seen, valid)
    assert holes.sum() == 25 and holes[15:20, 15:20].all()
    texture = np.where(seen[..., None], 120, 0).astype(np.uint8)
    filled = core.fill_unseen(texture, seen, 3)
    assert (filled[valid] > 100).all()  # no black left where nothing was seen


def test_robust_z_flags_the_outlier():
    features = np.random.default_rng(0).normal(100, 5, size=(50, 6))
    features[7] += 80
    z = np.abs(core.robust_z(features)).max(1)
    assert z.argmax() == 7 and z[7] > params_for(core.BlendParams, "blend").max_colour_z > np.delete(z, 7).max()


# ---------------------------------------------------------------- split

def test_split_never_leaks_an_identity():
    ids = np.arange(40)
    held_out = np.arange(32, 40)
    train, test = split_identities(ids[::-1], held_out, 8, seed=3)
    assert len(test) == 8 and len(train) == 24
    assert not set(train) & set(test) and not (set(train) | set(test)) & set(held_out)
    assert set(train) | set(test) | set(held_out) == set(ids)
    again = split_identities(np.random.default_rng(1).permutation(ids), held_out, 8, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)  # order of the input never matters
    other = split_identities(ids, held_out, 8, seed=4)[1]
    assert not np.array_equal(other, test)  # the seed does
    with pytest.raises(ValueError):
        split_identities(ids, held_out, 32, seed=0)


# ---------------------------------------------------------------- fidelity on rendered data

def test_visibility_beats_thirds_against_the_truth(dataset, template):
    valid = template.texel_valid
    faces = load_npz(dataset["faces"] / "shard-00000.npz")
    gains = []
    for identity, truth in zip(faces["identity_ids"], faces["lit_texture"]):
        pafs, visible, cosine = identity_views(dataset["pafs"], int(identity))
        thirds = core.thirds_texture(pafs[[0, 2, 4]], visible[[0, 2, 4]], valid)
        weighted = core.visibility_texture(pafs, visible, cosine, valid)
        gains.append(region_psnr(weighted.texture, truth, valid) - region_psnr(thirds.texture, truth, valid))
        assert region_psnr(weighted.texture, truth, valid) > 22  # a faithful texture, not just a better one
        assert weighted.seen[valid].mean() > thirds.seen[valid].mean()  # all views see more than one per third
    assert np.mean(gains) > 0


# ---------------------------------------------------------------- the stage

def test_stage_end_to_end(dataset, tmp_path):
    from headtex.blend.cli import run as run_blend
    from headtex.masks.cli import run as run_masks

    params = write_params(tmp_path / "params.yaml")
    out, metrics_path = tmp_path / "textures", tmp_path / "blend.json"
    metrics = run_blend(params, dataset["pafs"], dataset["faces"], dataset["template"], out, metrics_path, workers=2)
    run_masks(params, dataset["pafs"], dataset["template"], tmp_path / "masks", tmp_path / "masks.json")

    assert json.loads(metrics_path.read_text()) == metrics
    assert metrics["identities"] == {"present": 7, "mask_bank": 2, "train": 3, "test": 2}
    assert metrics["written"]["train"] + metrics["written"]["test"] + metrics["rejected"]["total"] == 5
    fidelity = metrics["fidelity"]
    assert fidelity["identities"] == 5
    assert fidelity["visibility"]["psnr_db"]["mean"] > fidelity["thirds"]["psnr_db"]["mean"]
    assert 0 < fidelity["visibility"]["ssim"]["mean"] <= 1

    bank_ids = set(read_index(tmp_path / "masks", MASKS)["held_out_identities"])
    assert bank_ids == {5, 6}  # the highest ids
    split_ids = {}
    for split in ("train", "test"):
        index = read_index(out / split, TEXTURES)
        assert index["method"] == "visibility" and index["views"] == [0, 2, 4]
        ids = [i for entry in index["shards"] for i in entry["identities"]]
        for entry in index["shards"]:
            arrays = load_npz(out / split / entry["file"])
            assert arrays["textures"].shape[1:] == (192, 192, 3) and arrays["textures"].dtype == np.uint8
            assert arrays["identity"].tolist() == entry["identities"]
        split_ids[split] = set(ids) | {int(i) for i in index["rejected"]}
    assert not split_ids["train"] & split_ids["test"]
    assert not bank_ids & (split_ids["train"] | split_ids["test"])  # the bank never holds a train/test identity
    masks = [load_npz(tmp_path / "masks" / e["file"]) for e in read_index(tmp_path / "masks", MASKS)["shards"]]
    assert set(np.concatenate([m["identity"] for m in masks]).tolist()) == bank_ids
    assert (out / "preview" / "grid.png").is_file() and not (out / "pending").exists()

    # The other method: same identities, same split, its own texture written.
    params = write_params(tmp_path / "thirds.yaml", method="thirds")
    thirds = run_blend(params, dataset["pafs"], dataset["faces"], dataset["template"], tmp_path / "t", tmp_path / "t.json", 1)
    assert thirds["fidelity"] == fidelity  # both measured every run, independent of the worker count
    assert read_index(tmp_path / "t" / "test", TEXTURES)["method"] == "thirds"


def test_gate_rejects_holes_seen_nowhere_outliers_and_missing_views(dataset, tmp_path):
    from headtex.blend.cli import run

    pafs_dir = tmp_path / "pafs"
    index = read_index(dataset["pafs"], PAFS)
    for entry in index["shards"]:
        arrays = load_npz(dataset["pafs"] / entry["file"])
        identity = arrays["identity"][:, None, None]
        broken = (identity == 0) & (arrays["visible"] > 0)
        arrays["paf"][broken] = (30, 200, 40)  # identity 0: a flat green failure
        hole = np.zeros((192, 192), bool)
        hole[80:120, 76:116] = True  # identity 2: no view sees the middle of the face (4 % of the head)
        top = np.zeros((192, 192), bool)
        top[:90] = True  # identity 3: no view sees the upper half of the head
        for k, blind in ((2, hole), (3, top)):
            for name in ("visible", "view_cosine", "paf"):
                arrays[name][((identity == k) & blind)] = 0
        drop = (arrays["identity"] == 1) & (arrays["view"] == 2)  # identity 1: lost its frontal view
        save_npz(pafs_dir / entry["file"], **{k: v[~drop] for k, v in arrays.items()})
        entry["count"] = int((~drop).sum())
    write_index(pafs_dir, index["shards"], views_per_identity=len(YAWS))
    metrics = run(write_params(tmp_path / "params.yaml"), pafs_dir, dataset["faces"], dataset["template"],
                  tmp_path / "out", tmp_path / "blend.json", workers=1)
    rejected = {**read_index(tmp_path / "out" / "train", TEXTURES)["rejected"], **read_index(tmp_path / "out" / "test", TEXTURES)["rejected"]}
    assert "colour" in rejected["0"] and rejected["1"] == ["missing_views"]
    assert "holes" in rejected["2"] and "unseen" in rejected["3"]
    assert rejected.keys() == {"0", "1", "2", "3"}  # identity 4 passes
    assert metrics["rejected"]["total"] == 4 and metrics["written"]["train"] + metrics["written"]["test"] == 1
    assert metrics["rejected"]["holes"] >= 1 and metrics["rejected"]["unseen"] >= 1


def test_gate_rejects_a_seam_the_blend_cannot_hide(dataset, tmp_path):
    """Plain averaging (pyramid_levels 1) of views that share no texel and disagree in exposure leaves steps at
    their borders: the gate rejects that texture for seams (multi-band blending hides even these, ratio ~1.6)."""
    from headtex.blend.cli import run

    pafs_dir = tmp_path / "pafs"
    index = read_index(dataset["pafs"], PAFS)
    for entry in index["shards"]:
        arrays = load_npz(dataset["pafs"] / entry["file"])
        rows = np.flatnonzero(arrays["identity"] == 3)
        if len(rows):
            # Identity 3: each texel seen by its most frontal view only, and every other view overexposed
            # (flat colours, so the sources' own step across a border is nil).
            cosine = np.where(arrays["visible"][rows] > 0, arrays["view_cosine"][rows].astype(int), -1)
            alone = (np.arange(len(rows))[:, None, None] == cosine.argmax(0)) & (cosine >= 0)
            colours = np.array([[60, 40, 30], [220, 180, 160]], np.uint8)[arrays["view"][rows] % 2]
            arrays["visible"][rows] = np.where(alone, 255, 0)
            arrays["view_cosine"][rows] = np.where(alone, arrays["view_cosine"][rows], 0)
            arrays["paf"][rows] = np.where(alone[..., None], colours[:, None, None], 0)
        save_npz(pafs_dir / entry["file"], **arrays)
    write_index(pafs_dir, index["shards"], views_per_identity=len(YAWS))
    metrics = run(write_params(tmp_path / "params.yaml", pyramid_levels=1), pafs_dir, dataset["faces"],
                  dataset["template"], tmp_path / "out", tmp_path / "blend.json", workers=1)
    rejected = {**read_index(tmp_path / "out" / "train", TEXTURES)["rejected"], **read_index(tmp_path / "out" / "test", TEXTURES)["rejected"]}
    assert rejected == {"3": ["seams"]}  # the four others blend real, overlapping views: no seam shows
    assert metrics["rejected"]["seams"] == metrics["rejected"]["total"] == 1
    assert metrics["seam_ratio"]["median"] < params_for(core.BlendParams, "blend").max_seam_ratio


def test_same_outputs_with_one_or_two_workers(dataset, tmp_path):
    """Every file blend writes is byte-identical whatever the number of worker processes."""
    from headtex.blend.cli import run

    params = write_params(tmp_path / "params.yaml")
    metrics = {}
    for workers in (1, 2):
        metrics[workers] = run(params, dataset["pafs"], dataset["faces"], dataset["template"], tmp_path / f"out{workers}",
                               tmp_path / f"blend{workers}.json", workers=workers)
    files = {workers: sorted(p.relative_to(tmp_path / f"out{workers}") for p in (tmp_path / f"out{workers}").rglob("*")
                             if p.is_file()) for workers in (1, 2)}
    assert files[1] == files[2] and len(files[1]) > 5
    for name in files[1]:
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name
    timing = ("seconds", "identities_per_second")
    assert {k: v for k, v in metrics[1].items() if k not in timing} == {k: v for k, v in metrics[2].items() if k not in timing}


def test_bad_input_is_one_clear_error(dataset, tmp_path):
    from headtex.blend.cli import run

    with pytest.raises(UserError, match="index.json: missing"):
        run(write_params(tmp_path / "p.yaml"), tmp_path / "nowhere", dataset["faces"], dataset["template"],
            tmp_path / "o", tmp_path / "m.json")
    with pytest.raises(UserError, match="views"):
        run(write_params(tmp_path / "p.yaml", views=[0, 2, 9]), dataset["pafs"], dataset["faces"], dataset["template"],
            tmp_path / "o", tmp_path / "m.json")
    with pytest.raises(UserError, match="method"):
        run(write_params(tmp_path / "p.yaml", method="median"), dataset["pafs"], dataset["faces"], dataset["template"],
            tmp_path / "o", tmp_path / "m.json")
    assert not (tmp_path / "o").exists()
