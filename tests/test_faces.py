import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from headtex.detection import find_face
from headtex.faces.cli import run
from headtex.faces.core import (
    LOCAL_MIRROR, FacesParams, appearance_regions, identity_vertices, local_centres, render_identity, sample_identity,
    to_lab, vary_albedo,
)
from headtex.geometry import project, render_textured, rotation_matrix
from headtex.datasets import FACES, iter_shards, read_index
from headtex.io import UserError
from headtex.photos import make_square, to_rgb8
from headtex.pool import Executor
from headtex.geometry.template import default_camera
from conftest import params_for, write_params_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regions(template):
    render = appearance_regions(template.albedo_render, template.render_texel_triangle >= 0,
                                template.vertex_uv[template.landmark_ids])
    return render, render.resized(template.albedo.shape[0])


def write_params(folder: Path, **faces) -> Path:
    """params.yaml with the repository's sections and `faces` overridden."""
    return write_params_file(folder / "params.yaml", "faces", **faces)


def test_embedded_defaults_are_the_params_yaml_section():
    section = yaml.safe_load((REPO / "params.yaml").read_text())["faces"]
    assert params_for(FacesParams, "faces", **section) == params_for(FacesParams, "faces")
    views = params_for(FacesParams, "faces").yaw_degrees
    assert len(views) == 11 and [views[1], views[5], views[7]] == [-35, 0, 35]  # the thesis' blend views 2, 6, 8


def test_identity_sampling_is_seeded_per_identity(template):
    config = params_for(FacesParams, "faces")
    first, again = (sample_identity(config, 3, template.basis_names) for _ in range(2))
    np.testing.assert_array_equal(first.shape, again.shape)
    np.testing.assert_array_equal(first.background, again.background)
    assert first.light == again.light and first.look.skin_lab.tolist() == again.look.skin_lab.tolist()
    other = sample_identity(config, 4, template.basis_names)
    assert not np.array_equal(first.shape, other.shape) and first.light != other.light
    reseeded = sample_identity(params_for(FacesParams, "faces", seed=1), 3, template.basis_names)
    assert not np.array_equal(first.shape, reseeded.shape)


def test_a_redraw_changes_only_the_shape_and_the_light(template):
    config = params_for(FacesParams, "faces", local_offsets_mm=[5.0, 0.5, 4.0])  # the local detail is off by default
    first, zeroth = sample_identity(config, 3, template.basis_names), sample_identity(config, 3, template.basis_names, 0)
    np.testing.assert_array_equal(first.shape, zeroth.shape)
    redrawn, again = (sample_identity(config, 3, template.basis_names, 1) for _ in range(2))
    np.testing.assert_array_equal(redrawn.shape, again.shape)
    assert not np.array_equal(redrawn.shape, first.shape) and redrawn.light != first.light
    assert not np.array_equal(redrawn.local_offsets, first.local_offsets)
    assert not np.array_equal(redrawn.shape, sample_identity(config, 3, template.basis_names, 2).shape)
    np.testing.assert_array_equal(redrawn.background, first.background)
    np.testing.assert_array_equal(redrawn.pitch, first.pitch)
    assert redrawn.look.skin_lab.tolist() == first.look.skin_lab.tolist() and redrawn.look.hairstyle == first.look.hairstyle


def test_local_shape_detail_is_a_few_mm_on_the_face_mirror_symmetric_without_asymmetry(template):
    local = dict(local_offsets_mm=[5.0, 0.5, 4.0])  # off by default (docs/RESULTS.md: the fit cannot follow it)
    identity = sample_identity(params_for(FacesParams, "faces", **local), 3, template.basis_names)
    shaped, vertices = template.shaped(identity.shape), identity_vertices(template, identity)
    moved = np.linalg.norm(vertices - shaped, axis=1)
    landmarks = moved[template.landmark_ids]
    assert 0.5 < np.median(landmarks) < 15 and moved.max() < 40
    # Compact support: the back of the head (beyond the RBF radius from every anchor) does not move.
    anchors = template.vertices[local_centres(template)]
    far = np.min(np.linalg.norm(template.vertices[:, None] - anchors[None], axis=2), axis=1) > identity.local_radius_mm
    assert far.sum() > 1000 and np.all(moved[far] == 0)
    symmetric = sample_identity(params_for(FacesParams, "faces", local_asymmetry=0.0, **local), 3, template.basis_names)
    np.testing.assert_allclose(symmetric.local_offsets[LOCAL_MIRROR] * [-1, 1, 1], symmetric.local_offsets, atol=1e-5)
    none = sample_identity(params_for(FacesParams, "faces", local_offsets_mm=[0.0, 0.0, 0.0]), 3, template.basis_names)
    np.testing.assert_array_equal(identity_vertices(template, none), template.shaped(none.shape))
    # Off leaves every other draw as it was (the local detail has its own stream).
    np.testing.assert_array_equal(none.shape, identity.shape)
    assert none.light == identity.light


def test_identities_hog_misses_are_redrawn_and_counted(template_dir, template, tmp_path):
    # At 32 px dlib's HOG finds no face at all (its window is 80 px; upsampled once the image is 64 px),
    # so every identity is redrawn the full number of times, kept at its last draw, and reported unresolved.
    params = write_params(tmp_path, source="synthetic", identities=2, image_size=32, supersample=1, hog_resample_attempts=2,
                          detection_check_identities=0, identity_check_identities=0)
    for workers in (1, 2):  # the redraws happen in the workers: same shards either way
        run(params, template_dir, tmp_path / f"faces{workers}", tmp_path / f"faces{workers}.json", workers)
        resample = json.loads((tmp_path / f"faces{workers}.json").read_text())["hog_resample"]
        assert resample == {"attempts": 2, "resampled_identities": 2, "redraws": 4, "unresolved_identities": [0, 1]}
    one, two = shards_of(tmp_path / "faces1"), shards_of(tmp_path / "faces2")
    assert one["images"].tobytes() == two["images"].tobytes() and one["shape"].tobytes() == two["shape"].tobytes()
    config = params_for(FacesParams, "faces", image_size=32, supersample=1)
    np.testing.assert_array_equal(one["shape"][1], sample_identity(config, 1, template.basis_names, 2).shape)
    params = write_params(tmp_path, source="synthetic", identities=2, image_size=32, supersample=1, hog_resample_attempts=0,
                          detection_check_identities=0, identity_check_identities=0)
    run(params, template_dir, tmp_path / "faces0", tmp_path / "faces0.json", 1)
    assert json.loads((tmp_path / "faces0.json").read_text())["hog_resample"]["redraws"] == 0
    np.testing.assert_array_equal(shards_of(tmp_path / "faces0")["shape"][1],
                                  sample_identity(config, 1, template.basis_names).shape)


def test_skin_and_hair_tones_reach_their_targets(template, regions):
    render_regions, _ = regions
    look = sample_identity(params_for(FacesParams, "faces"), 0, template.basis_names).look
    look.mirror_blend, look.brightness, look.contrast, look.beard = 0.0, 0.0, 1.0, 1.0
    look.hairstyle, look.glasses = "short", None  # the scan's hair where the hair region says
    for skin_l, hair_l in ((35.0, 60.0), (70.0, 12.0)):
        look.skin_lab[0], look.hair_lab[0] = skin_l, hair_l
        lab = to_lab(vary_albedo(template.albedo_render, render_regions, look))
        skin = lab[(render_regions.skin > 0.95) & (render_regions.beard < 0.05), 0]
        hair = lab[render_regions.hair > 0.95, 0]
        assert abs(np.median(skin) - skin_l) < 3.0
        assert abs(np.median(hair) - hair_l) < 6.0


@pytest.mark.parametrize("identity", [0, 1, 2])
def test_true_landmarks_match_dlib_at_yaw_0(template, regions, identity):
    config = params_for(FacesParams, "faces", yaw_degrees=[0.0])
    rendered = render_identity(template, *regions, sample_identity(config, identity, template.basis_names), 256)
    detection = find_face(rendered.images[0], [("hog", 1)])
    assert detection is not None
    # Inner points (brows, nose, eyes, mouth); dlib's jaw points follow the silhouette rather than the mesh.
    error = np.linalg.norm(detection.landmarks[17:] - rendered.landmarks[0, 17:], axis=1)
    # dlib's predictor regresses towards its mean face, so the wider identity geometry (issue 14) leaves it further
    # from the truth: 2.5 px mean with the shape coefficients zeroed, 3.9 px mean / 8.9 px worst over the 64 default
    # identities (metrics/faces.json); a wrong projection would miss by tens of pixels.
    assert error.mean() < 8.0 and np.median(error) < 7.5


def test_views_share_one_identity_and_its_lit_texture_is_what_they_show(template, regions):
    config = params_for(FacesParams, "faces", yaw_degrees=[-35.0, 0.0, 35.0])
    identity = sample_identity(config, 5, template.basis_names)
    rendered = render_identity(template, *regions, identity, 128)
    assert rendered.images.shape == (3, 128, 128, 3) and rendered.images.dtype == np.uint8
    assert rendered.lit_texture.shape == template.albedo.shape and rendered.landmarks.shape == (3, 68, 2)
    np.testing.assert_array_equal(rendered.yaw, [-35.0, 0.0, 35.0])
    assert np.abs(rendered.pitch).max() <= config.pitch_jitter_degrees and len(set(rendered.pitch.tolist())) == 3
    # One background for all views: the corners are identical.
    assert (rendered.images[:, :4, :4] == rendered.images[:1, :4, :4]).all()
    # Re-rendering each view from the ground-truth lit texture (uv.size) gives the same picture.
    scale, translation = default_camera(128)
    vertices = identity_vertices(template, identity)
    for view, (yaw, pitch, roll) in enumerate(zip(identity.yaw, identity.pitch, identity.roll)):
        screen = project(vertices, rotation_matrix(float(yaw), float(pitch), float(roll)), scale, translation)
        again, coverage = render_textured(screen, template.faces, template.vertex_uv, rendered.lit_texture, 128,
                                          identity.background)
        head = coverage > 0.99
        difference = np.abs(again.astype(int) - rendered.images[view])[head]
        assert np.median(difference) <= 4 and difference.mean() < 6
        np.testing.assert_allclose(rendered.landmarks[view], screen[template.landmark_ids, :2], atol=1e-4)


def test_identities_look_different(template, regions):
    config = params_for(FacesParams, "faces", yaw_degrees=[0.0])
    renders = [render_identity(template, *regions, sample_identity(config, i, template.basis_names), 96)
               for i in range(6)]
    textures = np.stack([r.lit_texture for r in renders]).astype(np.float32)
    valid = template.texel_valid
    for i in range(6):
        for j in range(i):
            assert np.abs(textures[i] - textures[j])[valid].mean() > 8.0  # not the same texture
    skin_lightness = [np.median(to_lab(r.lit_texture)[regions[1].skin > 0.95, 0]) for r in renders]
    assert np.ptp(skin_lightness) > 15.0  # light and dark skin among six identities
    shapes = np.stack([r.shape for r in renders])
    shift = np.linalg.norm(np.tensordot(shapes, template.basis, axes=1), axis=2).max(1)  # mm, furthest vertex
    assert (shift > 5.0).all()


def test_hairstyles_brows_lips_and_glasses_paint_where_they_belong(template, regions):
    render_regions, _ = regions
    look = sample_identity(params_for(FacesParams, "faces"), 0, template.basis_names).look
    look.mirror_blend, look.brightness, look.contrast, look.age = 0.0, 0.0, 1.0, 0.0
    look.skin_lab[0], look.hair_lab[0] = 65.0, 15.0  # light skin, dark hair: bare scalp shows clearly
    look.freckles, look.moles, look.eye_shadow = look.freckles[:0], look.moles[:0], 0.0

    def paint(**changes) -> np.ndarray:
        for key, value in changes.items():
            setattr(look, key, value)
        return to_lab(vary_albedo(template.albedo_render, render_regions, look))

    plain = paint(hairstyle="short", glasses=None, brow_density=1.0, lip_lab=np.zeros(3, np.float32))
    size = plain.shape[0]
    points = render_regions.points * size
    crown = (slice(int(0.4 * render_regions.hairline * size), int(0.8 * render_regions.hairline * size)),
             slice(int(points[21, 0]), int(points[22, 0]) + 1))  # hair straight above the forehead
    assert np.median(plain[crown][..., 0]) < 30
    assert np.median(paint(hairstyle="bald")[crown][..., 0]) > 55  # skin where the hair was
    brow = render_regions.brows > 0.5
    assert np.median(paint(hairstyle="short", brow_density=0.0)[brow][..., 0]) > np.median(plain[brow][..., 0]) + 8
    lips = render_regions.lips > 0.8
    redder = paint(brow_density=1.0, lip_lab=np.array([0.0, 15.0, 0.0], np.float32))
    assert np.median(redder[lips][..., 1]) > np.median(plain[lips][..., 1]) + 10
    framed = paint(lip_lab=np.zeros(3, np.float32), glasses=np.array([10.0, 4.0, 1.0]))
    # Dark frames ring the eyes: a ring of texels about each eye darkens, the skin elsewhere does not.
    darker = (plain[..., 0] - framed[..., 0]) > 15
    eyes = np.zeros_like(darker)
    eyes[int(points[36:48, 1].min() - 0.06 * size):int(points[36:48, 1].max() + 0.06 * size),
         int(points[0, 0]):int(points[16, 0])] = True
    assert darker[eyes].sum() > 200 and darker[~eyes].sum() < 0.2 * darker[eyes].sum()


def test_rgb_conversions():
    matte = (10, 20, 30)
    gray16 = np.full((40, 50), 65535, np.uint16)
    rgb, conversions = to_rgb8(gray16, matte)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8 and (rgb == 255).all()
    assert conversions == ["16-bit", "grayscale"]
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3], rgba[:, 20:, 3] = 200, 255  # left half transparent
    rgb, conversions = to_rgb8(rgba, matte)
    assert conversions == ["alpha"] and (rgb[:, :20] == matte).all() and (rgb[:, 20:] == 200).all()
    square, notes = make_square(np.zeros((100, 60, 3), np.uint8), 32, "crop", matte)
    assert square.shape == (32, 32, 3) and notes and "non-square" in notes[0]
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((4, 4, 3), np.int32), matte)


def shards_of(folder: Path) -> dict[str, np.ndarray]:
    arrays = [shard for _, shard in iter_shards(folder, FACES)]
    return {key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]}


def test_same_shards_with_one_or_two_workers(template_dir, template, tmp_path):
    # 5 identities x 11 views in shards of <= 24 views: 2 identities (22 views) per shard, never split.
    params = write_params(tmp_path, source="synthetic", identities=5, image_size=64, shard_size=24,
                          detection_check_identities=0)
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"faces{workers}"
        metrics = run(params, template_dir, out, tmp_path / f"faces{workers}.json", workers)
        assert metrics["images"] == 55 and metrics["identities"] == 5 and metrics["images_per_second"] > 0
        outputs[workers] = out
    index = read_index(outputs[1], FACES)
    assert [entry["identities"] for entry in index["shards"]] == [[0, 1], [2, 3], [4]]
    assert index["has_truth"] and index["views_per_identity"] == 11 and index["uv_size"] == template.albedo.shape[0]
    assert index["image_size"] == 64 and index["source"] == "synthetic"
    for entry in index["shards"]:
        one = dict(np.load(outputs[1] / entry["file"], allow_pickle=False))
        two = dict(np.load(outputs[2] / entry["file"], allow_pickle=False))
        assert one.keys() == two.keys() == {"images", "identity", "view", "yaw", "pitch", "roll", "landmarks",
                                            "identity_ids", "lit_texture", "shape"}
        for key in one:
            assert one[key].dtype == two[key].dtype and one[key].tobytes() == two[key].tobytes(), key
    data = shards_of(outputs[1])
    assert data["images"].shape == (55, 64, 64, 3) and data["lit_texture"].shape[0] == 5
    assert data["view"].dtype == np.int16 and data["identity"].dtype == np.int64
    np.testing.assert_array_equal(data["view"][:11], np.arange(11))
    assert (outputs[1] / "preview" / "grid.png").is_file()
    saved = json.loads((tmp_path / "faces1.json").read_text())
    assert {"identities", "images", "bad_inputs"} <= set(saved)
    assert saved["identity_check"]["identities"] == 5 and saved["identity_check"]["side_yaws"] == [-35.0, 35.0]
    assert not {"seconds", "images_per_second", "workers"} & set(saved)  # run facts: metrics/timing/faces.json


def test_the_workers_checks_are_dlibs_verdicts_on_the_written_views(template_dir, tmp_path):
    """The synthetic workers detect and describe their own views once (for the HOG redraws and the metrics): the
    figures must be what dlib says about the images in the shards."""
    from headtex.detection import detect_faces
    from headtex.faces.cli import identity_check

    params = write_params(tmp_path, source="synthetic", identities=3, image_size=160, supersample=1, hog_resample_attempts=1,
                          detection_check_identities=2, identity_check_identities=None)
    metrics = run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    data = shards_of(tmp_path / "faces")
    checked = (data["identity"] < 2) & (np.abs(data["yaw"]) <= 45)
    found = [len(detect_faces(image, "hog", 1)) > 0 for image in data["images"][checked]]
    assert metrics["hog_checked_views"] == len(found) == 18 and metrics["hog_detection_rate_abs_yaw_le_45"] == round(np.mean(found), 4)
    missed = [f"identity {i} view {v} (yaw {y:g}): no face found"
              for i, v, y, f in zip(data["identity"][checked], data["view"][checked], data["yaw"][checked], found) if not f]
    assert metrics["hog_missed_views"] == missed
    frontal = (data["identity"] < 2) & (data["yaw"] == 0)
    errors = [np.linalg.norm(find_face(image, [("hog", 1)]).landmarks[17:] - truth[17:], axis=1).mean()
              for image, truth in zip(data["images"][frontal], data["landmarks"][frontal])
              if find_face(image, [("hog", 1)]) is not None]
    assert metrics["dlib_vs_true_inner_landmarks_px_yaw0"]["views"] == len(errors) > 0
    assert metrics["dlib_vs_true_inner_landmarks_px_yaw0"]["mean"] == round(float(np.mean(errors)), 2)
    from_shards = identity_check(tmp_path / "faces", read_index(tmp_path / "faces", FACES)["shards"], 3, None, Executor(1))
    assert metrics["identity_check"] == from_shards and from_shards["identities"] == 3


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), image)


def test_directory_source_converts_and_reports_bad_files(template_dir, template, regions, tmp_path):
    photos = tmp_path / "photos"
    rendered = render_identity(template, *regions, sample_identity(params_for(FacesParams, "faces", yaw_degrees=[0.0, 20.0]), 0,
                                                                     template.basis_names), 200)
    face, turned = rendered.images
    write_image(photos / "anna" / "a_front.png", face)
    write_image(photos / "anna" / "b_gray.png", cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    write_image(photos / "anna" / "c_16bit.png", turned.astype(np.uint16) * 257)
    (photos / "anna" / "d_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(photos / "anna" / "e_wide.jpg", np.hstack([face, face[:, :50]]))
    rgba = np.dstack([turned, np.full(turned.shape[:2], 255, np.uint8)])
    rgba[:20, :, 3] = 0
    write_image(photos / "ben" / "1.png", rgba)
    (photos / "ben" / "notes.txt").write_text("taken on a Tuesday")
    (photos / "README.txt").write_text("one folder per person")
    (photos / "carl" / "broken.png").parent.mkdir(parents=True)
    (photos / "carl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    params = write_params(tmp_path, source="directory", dir=str(photos), detection_check_identities=None)
    metrics = run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    assert metrics["identities"] == 2 and metrics["images"] == 5
    lines = metrics["bad_input_lines"]
    assert metrics["bad_inputs"] == len(lines) == 5
    assert any("d_corrupt.jpg" in line and "truncated JPEG" in line for line in lines)  # the one photo reader
    assert any("notes.txt" in line for line in lines) and any("README.txt" in line for line in lines)
    assert any("broken.png" in line for line in lines) and any("carl" in line and "no usable view" in line for line in lines)
    converted = " ".join(metrics["converted_lines"])
    assert metrics["converted"] == 4  # gray, 16-bit, wide, alpha
    assert "b_gray.png" in converted and "grayscale" in converted and "16-bit" in converted
    assert "alpha" in converted and "non-square" in converted

    index = read_index(tmp_path / "faces", FACES)
    assert index["source"] == "directory" and not index["has_truth"] and index["view_counts"] == [4, 1]
    assert index["names"]["0"] == {"folder": "anna", "files": ["a_front.png", "b_gray.png", "c_16bit.png", "e_wide.jpg"]}
    data = shards_of(tmp_path / "faces")
    assert "lit_texture" not in data and "shape" not in data
    assert data["images"].shape == (5, 256, 256, 3) and np.isnan(data["yaw"]).all() and np.isnan(data["landmarks"]).all()
    np.testing.assert_array_equal(data["view"], [0, 1, 2, 3, 0])
    gray = data["images"][1]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (data["images"][4][:20] == 128).all()  # transparent rows composited on alpha_background
    assert metrics["hog_detection_rate_all_views"] > 0.5
    # Two identities, no poses: one descriptor pair between their first views, no within-identity figure.
    assert metrics["identity_check"]["pairs"] == 1 and "share_identities_consistent" not in metrics["identity_check"]


def test_bad_params_are_one_line_errors(tmp_path, template_dir):
    params = write_params(tmp_path, source="webcam")
    with pytest.raises(UserError, match="source must be"):
        run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    params = write_params(tmp_path, source="directory", dir=str(tmp_path / "nowhere"))
    result = subprocess.run([sys.executable, "-m", "headtex", "faces", "--params", str(params), "--template",
                             str(template_dir), "--out", str(tmp_path / "faces"), "--metrics", str(tmp_path / "m.json")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "nowhere" in result.stderr
    assert not (tmp_path / "faces").exists()


# --- generated people (the stylegan stage's generator) ---

def test_generated_identities_are_different_people_with_ground_truth_and_worker_independent(
        template_dir, stylegan_dir, tmp_path):
    """The default source: each identity renders a generated person's face on its fitted shape, with the truth."""
    from headtex.identity import SAME_PERSON, face_descriptor, pair_distances

    params = write_params(tmp_path, identities=3, shard_size=11, identity_check_identities=None)
    for workers in (1, 2):
        metrics = run(params, template_dir, tmp_path / f"faces{workers}", tmp_path / f"faces{workers}.json", workers,
                      stylegan_dir=stylegan_dir)
    one, two = shards_of(tmp_path / "faces1"), shards_of(tmp_path / "faces2")
    for key in one:
        assert one[key].tobytes() == two[key].tobytes(), key  # byte-identical whatever the worker count
    index = read_index(tmp_path / "faces1", FACES)
    assert index["source"] == "generated" and index["has_truth"] and one["lit_texture"].shape[0] == 3
    assert metrics["hog_detection_rate_abs_yaw_le_45"] == 1.0
    assert metrics["identity_check"]["share_identities_consistent"] == 1.0  # one person from -35 to +35 degrees
    frontal = [face_descriptor(image) for image in one["images"][one["yaw"] == 0]]
    assert min(pair_distances(np.stack(frontal))) >= SAME_PERSON  # three people
    assert metrics["hog_resample"]["person_latents"] >= 3 and metrics["hog_resample"]["identities_without_person"] == []


def test_a_generated_face_lies_where_the_template_is_seen_and_the_rest_takes_its_colours(template, regions):
    """person_face: the face region of the layout comes from the person, the rest keeps the re-toned albedo."""
    from headtex.faces.core import face_region, person_face

    render_regions = regions[0]
    size = template.albedo_render.shape[0]
    texture = np.zeros((size, size, 3), np.uint8)
    texture[...] = (40, 160, 90)  # a green person, seen head-on on the left half of the layout only
    cosine = np.zeros((size, size), np.float32)
    cosine[:, : size // 2] = 1.0
    face = person_face(texture, cosine, render_regions, yaw=-20.0)
    region = face_region(render_regions, size)
    assert np.allclose(face.weight, region, atol=1e-5)  # the mirror fills the unseen right half
    assert np.all(face.texture[region > 0.5] == (40, 160, 90))
    over = face.over(template.albedo)  # any layout size
    small = cv2.resize(region, over.shape[:2][::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(over[small > 0.99].astype(int) - (40, 160, 90)).max() <= 1
    np.testing.assert_array_equal(over[small == 0], template.albedo[small == 0])
    assert abs(to_lab(np.array([[[40, 160, 90]]], np.uint8))[0, 0, 1] - face.skin_lab[1]) < 1.0  # its skin tone


def test_stylegan_views_turn_and_drifting_views_are_dropped_and_counted(template_dir, stylegan_dir, tmp_path):
    params = write_params(tmp_path, source="stylegan", identities=2, image_size=128, truncation=0.7)
    metrics = run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1, stylegan_dir=stylegan_dir)
    check = metrics["stylegan_check"]
    views = len(params_for(FacesParams, "faces").yaw_degrees)
    assert check["views_kept"] + check["views_dropped_another_person"] + check["views_dropped_no_face"] \
        + views * check["dropped_no_centre_face"] == 2 * views
    reached = [view["fitted_yaw_median"] for view in check["per_view"]]
    left, right = reached[1], reached[7]  # the views at -35 and +35 degrees
    assert left is not None and right is not None and right - left > 20.0  # the direction turns the face
    index = read_index(tmp_path / "faces", FACES)
    assert index["source"] == "stylegan" and not index["has_truth"] and index["images"] == check["views_kept"]
    assert metrics["images"] == check["views_kept"]


def test_generated_without_the_stylegan_stage_is_one_line(template_dir, tmp_path):
    params = write_params(tmp_path, source="generated")
    with pytest.raises(UserError, match="run `dvc repro stylegan`"):
        run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1, stylegan_dir=tmp_path / "none")
    assert not (tmp_path / "faces").exists()
