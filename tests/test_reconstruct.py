"""reconstruct: one photo -> textured head. The real astronaut photo end to end, every bad input, large photos."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from headtex.inpaint import Generator
from headtex.io import UserError, read_png
from headtex.geometry.uv import UVParams
from headtex.fitting import jaw_region, partial_texture, sampling_view
from headtex.pafs.core import PafsParams
from headtex.reconstruct.cli import OUTPUT_FILES, folder_names, load_assets, run
from headtex.reconstruct.core import ReconstructParams, find_face, reconstruct, torch_threads
from headtex.photos import jpeg_problem, read_photo
from headtex.inpaint.model import load_inpainter, save_inpainter
from conftest import fit_arguments, params_for, run_headtex, texture_arguments

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
UV_SIZE = params_for(UVParams, "uv").size
MATTE = (128, 128, 128)  # photos.alpha_background


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A real (untrained, tiny) model file: enough for the plumbing; the holes get its untrained paint."""
    path = tmp_path_factory.mktemp("model") / "inpainter.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_inpainter(path, Generator(latent=8), 8, "coarse", UV_SIZE)
    return path


@pytest.fixture(scope="module")
def refined_model(tmp_path_factory, model) -> Path:
    """The same weights as `model`, shipped with the refined output (train.ship_output: refined)."""
    generator, info = load_inpainter(model)
    path = tmp_path_factory.mktemp("refined") / "inpainter.pt"
    save_inpainter(path, generator, info["latent"], "refined", info["uv_size"])
    return path


@pytest.fixture(scope="module")
def example_run(tmp_path_factory, template_dir, model):
    out = tmp_path_factory.mktemp("demo")
    result = run(PARAMS, [], out / "demo", model, template_dir, ["astronaut"], out / "reconstruct.json",
                 out / "timing.json")
    return out, result


def write_image(path: Path, rgb_or_raw: np.ndarray, convert: bool = True, params=()) -> Path:
    image = cv2.cvtColor(rgb_or_raw, cv2.COLOR_RGB2BGR) if convert and rgb_or_raw.ndim == 3 else rgb_or_raw
    assert cv2.imwrite(str(path), image, list(params))
    return path


def command(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`headtex reconstruct ...` in this process: (exit code, stdout, stderr)."""
    return run_headtex(monkeypatch, capsys, "reconstruct", *args)


def reconstruct_args(template_dir, model, out):
    return ["--out", str(out), "--model", str(model), "--template", str(template_dir), "--params", str(PARAMS)]


def assert_one_error_line(code: int, err: str, path: Path, problem: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: ") and problem in lines[0], lines[0]


# ---- the real photograph, end to end ----

def test_astronaut_writes_every_output(example_run, template):
    out, result = example_run
    folder = out / "demo" / "astronaut"
    assert result["written"] == 1 and result["failed"] == 0 and result["folders"] == [str(folder)]
    for name in OUTPUT_FILES + ("photo.png",):
        assert (folder / name).is_file(), name
    assert not [p for p in (out / "demo").iterdir() if p.name.startswith(".")]  # no staging left behind
    fit = json.loads((folder / "fit.json").read_text())
    assert np.array(fit["landmarks"]).shape == (68, 2)
    assert set(fit["pose_degrees"]) == {"yaw", "pitch", "roll"} and abs(fit["pose_degrees"]["yaw"]) < 15
    rotation = np.array(fit["rotation"])
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
    assert fit["shape"]["names"] == template.basis_names and len(fit["shape"]["coefficients"]) == len(template.basis)
    assert fit["detector"] == "hog" and fit["detector_score"] > 0 and fit["image_size"] == [512, 512]
    # The landmarks are on her face (dlib's box) and the fitted template lands on them.
    left, top, right, bottom = fit["face_box"]
    landmarks = np.array(fit["landmarks"])
    assert landmarks[:, 0].min() > left - 10 and landmarks[:, 0].max() < right + 10
    assert landmarks[:, 1].min() > top - 20 and landmarks[:, 1].max() < bottom + 10
    assert np.linalg.norm(np.array(fit["fitted_landmarks"]) - landmarks, axis=1).mean() < 6.0
    assert "timings_seconds" not in fit  # fit.json is what the photo determines: identical on a rerun
    timing = json.loads((out / "timing.json").read_text())["per_photo"]["astronaut"]
    assert set(timing) >= {"detection", "fit", "sampling", "inpainting", "writing", "total"}
    metrics = json.loads((out / "reconstruct.json").read_text())
    assert metrics["written"] == 1 and metrics["per_photo"]["astronaut"]["detector_score"] == fit["detector_score"]
    assert "timings_seconds" not in metrics["per_photo"]["astronaut"]  # run facts: the timing file
    assert json.loads((out / "timing.json").read_text())["per_photo"]["astronaut"]["total"] > 0


def test_textures_masks_and_completion(example_run, template):
    folder = example_run[0] / "demo" / "astronaut"
    partial, mask, texture = (read_png(folder / name) for name in ("partial.png", "mask.png", "texture.png"))
    valid = template.texel_valid
    assert partial.shape == texture.shape == (UV_SIZE, UV_SIZE, 3) and mask.shape == (UV_SIZE, UV_SIZE)
    assert set(np.unique(mask)) == {0, 255}
    seen = (mask == 255) & valid
    assert 0.4 < seen.sum() / valid.sum() < 0.9  # a frontal photo shows the face, not the back of the head
    assert not partial[mask == 0].any()  # invisible texels are masked, not interpolated
    np.testing.assert_array_equal(texture[seen], partial[seen])  # known texels kept
    holes = (mask == 0) & valid
    assert (texture[holes].max(axis=1) > 0).mean() > 0.99  # every hole painted by the model
    # The middle of the face is skin-coloured: red > green > blue.
    centre = texture[UV_SIZE // 2 - 8:UV_SIZE // 2 + 8, UV_SIZE // 2 - 8:UV_SIZE // 2 + 8].reshape(-1, 3).mean(0)
    assert centre[0] > centre[1] > centre[2]


def network_paint(model_file: Path, partial: np.ndarray, mask: np.ndarray, valid: np.ndarray, output: str) -> np.ndarray:
    """What the model file's generator paints into the holes of one partial texture (uint8), straight from torch."""
    generator, _ = load_inpainter(model_file)
    image = torch.from_numpy(partial).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    hole = torch.from_numpy((mask == 0) & valid).float()[None, None]
    with torch_threads(1), torch.inference_mode():
        painted = generator.forward_coarse(image, hole) if output == "coarse" else generator(image, hole)[1]
    return ((painted.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()


def test_holes_hold_the_models_inference(example_run, template, model):
    """texture.png's holes are exactly what the shipped (coarse) network paints for partial.png and mask.png."""
    folder = example_run[0] / "demo" / "astronaut"
    partial, mask, texture = (read_png(folder / name) for name in ("partial.png", "mask.png", "texture.png"))
    holes = (mask == 0) & template.texel_valid
    expected = network_paint(model, partial, mask, template.texel_valid, "coarse")
    np.testing.assert_array_equal(texture[holes], expected[holes])
    assert texture[holes].astype(float).std(axis=0).min() > 5  # the untrained network's paint is not a flat fill


def test_ship_output_refined_fills_holes_with_the_refined_output(template_dir, template, model, refined_model, tmp_path):
    """A model shipped with `refined` completes the photo with the refinement network, not the coarse one."""
    result = run(PARAMS, [], tmp_path / "out", refined_model, template_dir, ["astronaut"])
    folder = tmp_path / "out" / "astronaut"
    assert result["model"]["ship_output"] == "refined"
    assert json.loads((folder / "fit.json").read_text())["model"]["ship_output"] == "refined"
    partial, mask, texture = (read_png(folder / name) for name in ("partial.png", "mask.png", "texture.png"))
    holes = (mask == 0) & template.texel_valid
    refined = network_paint(refined_model, partial, mask, template.texel_valid, "refined")
    coarse = network_paint(model, partial, mask, template.texel_valid, "coarse")
    np.testing.assert_array_equal(texture[holes], refined[holes])
    assert (texture[holes] != coarse[holes]).any(axis=1).mean() > 0.5  # the two networks paint differently


def test_obj_loads_in_trimesh_with_its_texture(example_run, template):
    import trimesh

    folder = example_run[0] / "demo" / "astronaut"
    assert "map_Kd texture.png" in (folder / "head.mtl").read_text()  # relative path
    mesh = trimesh.load(folder / "head.obj", process=False, maintain_order=True)
    assert len(mesh.vertices) == len(template.vertices) and len(mesh.faces) == len(template.faces)
    uv = mesh.visual.uv
    assert uv.shape == (len(template.vertices), 2) and uv.min() >= 0.0 and uv.max() <= 1.0
    image = np.asarray(mesh.visual.material.image.convert("RGB"))
    np.testing.assert_array_equal(image, read_png(folder / "texture.png"))
    fit = json.loads((folder / "fit.json").read_text())
    # The shaped template, moved by the landmark correction only near the face (its reach, pafs.correction_radius_mm).
    shaped = template.shaped(np.array(fit["shape"]["coefficients"]))
    reach = params_for(PafsParams, "pafs").correction_radius_mm
    # (The jaw's landmarks may be matched to outline vertices up to ~20 mm from the annotated ones.)
    distance = np.linalg.norm(shaped[:, None] - shaped[template.landmark_ids][None], axis=2).min(1)
    moved = np.linalg.norm(mesh.vertices - shaped, axis=1)
    assert moved[distance > reach + 20.0].max() < 1e-3 and 0.2 < moved[distance < reach].max() < 20.0


def test_overlay_and_preview_pictures(example_run, astronaut):
    folder = example_run[0] / "demo" / "astronaut"
    overlay = read_png(folder / "overlay.png")
    assert overlay.shape == astronaut.shape
    drawn = np.abs(overlay.astype(int) - astronaut).sum(axis=2) > 30
    fit = json.loads((folder / "fit.json").read_text())
    x0, y0, x1, y1 = fit["sampling"]["box"]
    assert drawn[y0:y1, x0:x1].mean() > 0.05 and drawn.sum() < 0.9 * drawn[y0:y1, x0:x1].size  # only on the head
    assert read_png(folder / "preview.png").shape == (256, 6 * 256, 3)
    np.testing.assert_array_equal(read_png(folder / "photo.png"), astronaut)


def test_command_on_a_jpeg_prints_the_paths(template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    photo = write_image(tmp_path / "eileen.jpg", astronaut, params=(cv2.IMWRITE_JPEG_QUALITY, 92))
    code, out, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert code == 0, err
    assert f"{tmp_path / 'out' / 'eileen' / 'head.obj'}" in out and "1 of 1 photos" in out
    assert (tmp_path / "out" / "eileen" / "texture.png").is_file()
    assert not (tmp_path / "out" / "eileen" / "photo.png").exists()  # the user has the photo


# ---- bad inputs: one line each, exit 1, no traceback ----

def test_not_an_image(template_dir, model, tmp_path, monkeypatch, capsys):
    photo = tmp_path / "notes.jpg"
    photo.write_text("shopping list: eggs, milk\n")
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, photo, "not an image")
    assert not (tmp_path / "out" / "notes").exists()


def test_truncated_jpeg(template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    whole = write_image(tmp_path / "whole.jpg", astronaut).read_bytes()
    photo = tmp_path / "cut.jpg"
    photo.write_bytes(whole[: len(whole) // 2])
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, photo, "truncated JPEG")


def test_jpeg_check_accepts_trailers_and_sees_past_thumbnails(astronaut):
    whole = cv2.imencode(".jpg", astronaut)[1].tobytes()
    assert jpeg_problem(whole) is None
    assert jpeg_problem(whole + b"SEFH trailer some phones append" + b"\x00" * 64) is None
    # An application segment holding a whole small JPEG (as EXIF thumbnails do) ends with FF D9 too.
    thumbnail = cv2.imencode(".jpg", astronaut[::16, ::16])[1].tobytes()
    segment = b"\xff\xef" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    with_thumbnail = whole[:2] + segment + whole[2:]
    assert cv2.imdecode(np.frombuffer(with_thumbnail, np.uint8), cv2.IMREAD_COLOR) is not None
    assert jpeg_problem(with_thumbnail) is None
    assert "truncated" in jpeg_problem(with_thumbnail[: len(with_thumbnail) - 5000])
    assert "truncated" in jpeg_problem(whole[:1])


@pytest.mark.parametrize("kind", ["16-bit", "rgba", "grayscale"])
def test_png_variants_are_converted_and_noted(kind, template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    if kind == "16-bit":
        raw, note, expected = bgr.astype(np.uint16) * 257, "16-bit", astronaut
    elif kind == "rgba":  # opaque face, transparent top-left corner
        alpha = np.full(astronaut.shape[:2], 255, np.uint8)
        alpha[:100, :100] = 0
        raw, note = np.dstack([bgr, alpha]), "alpha"
        expected = astronaut.copy()
        expected[:100, :100] = MATTE  # photos.alpha_background: the rule faces' directory source uses too
    else:
        raw, note = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "grayscale"
        expected = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2RGB)
    photo = write_image(tmp_path / f"{kind}.png", raw, convert=False)
    image, notes = read_photo(photo, MATTE)
    assert image.dtype == np.uint8 and image.shape == astronaut.shape
    np.testing.assert_array_equal(image, expected)
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert code == 0, err
    fit = json.loads((tmp_path / "out" / kind / "fit.json").read_text())
    assert any(note in line for line in fit["conversions"]) and notes == fit["conversions"]


def test_exif_orientation_is_applied(astronaut, tmp_path):
    from PIL import Image

    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut)))  # stored turned, as phones do
    exif = sideways.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo = tmp_path / "phone.jpg"
    sideways.save(photo, "JPEG", quality=95, exif=exif)
    image, _ = read_photo(photo, MATTE)
    assert image.shape == astronaut.shape and np.abs(image.astype(int) - astronaut).mean() < 5


def test_more_pixels_than_the_decoder_takes(tmp_path):
    import struct
    import zlib

    header = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    header[16:24] = struct.pack(">II", 40000, 40000)  # IHDR width, height: 1.6 gigapixels
    header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])))
    photo = tmp_path / "giant.png"
    photo.write_bytes(bytes(header))
    with pytest.raises(UserError, match="more pixels than OpenCV decodes"):
        read_photo(photo, MATTE)


def test_image_with_no_face(template_dir, model, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    photo = write_image(tmp_path / "wall.png", cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), np.uint8), (9, 9), 3))
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, photo, "no face found")


def test_one_pixel_image(template_dir, model, tmp_path, monkeypatch, capsys):
    photo = write_image(tmp_path / "dot.png", np.full((1, 1, 3), 200, np.uint8))
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, photo, "1x1 px")


def test_missing_model_file(template_dir, astronaut, tmp_path, monkeypatch, capsys):
    photo = write_image(tmp_path / "a.png", astronaut)
    missing = tmp_path / "models" / "inpainter.pt"
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, missing, tmp_path / "out"))
    assert_one_error_line(code, err, missing, "missing; run `headtex train`")


def test_corrupt_model_file(template_dir, astronaut, tmp_path, monkeypatch, capsys):
    photo = write_image(tmp_path / "a.png", astronaut)
    corrupt = tmp_path / "inpainter.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, corrupt, tmp_path / "out"))
    assert_one_error_line(code, err, corrupt, "corrupt or unreadable")


def test_output_folder_that_is_a_file(template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    photo = write_image(tmp_path / "a.png", astronaut)
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, out))
    assert_one_error_line(code, err, out, "exists and is not a folder")
    assert out.read_text() == "not a folder"
    # ... and a photo's own folder name taken by a file
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").write_text("mine")
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, tmp_path / "out" / "a", "exists and is not a folder")
    assert (tmp_path / "out" / "a").read_text() == "mine"


def test_a_single_missing_photo_exits_non_zero(template_dir, model, tmp_path, monkeypatch, capsys):
    """One photo that does not exist: one error line naming it, exit status 1, nothing written."""
    missing = tmp_path / "nowhere.jpg"
    code, _, err = command(monkeypatch, capsys, str(missing), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, missing, "no such file")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_several_photos_report_each_failure_and_write_the_good_ones(
        template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    good = write_image(tmp_path / "good.jpg", astronaut)
    missing = tmp_path / "missing.jpg"
    dot = write_image(tmp_path / "dot.png", np.zeros((1, 1, 3), np.uint8))
    (tmp_path / "sub").mkdir()
    mirrored = write_image(tmp_path / "sub" / "good.jpg", np.ascontiguousarray(astronaut[:, ::-1]))
    out = tmp_path / "out"
    code, stdout, err = command(monkeypatch, capsys, str(good), str(missing), str(dot), str(mirrored),
                                *reconstruct_args(template_dir, model, out))
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]  # not the progress lines
    assert lines[0] == f"error: {missing}: no such file"
    assert lines[1].startswith(f"error: {dot}: image is 1x1 px")
    assert lines[2] == "error: 2 of 4 photos failed (listed above)"
    assert "2 of 4 photos" in stdout
    # Same stem twice: two folders, each its own photo's result: the mirrored photo's face box is the mirror image
    # (the astronaut looks nearly straight on, so its fitted yaw, ~-1.5 deg either way, cannot tell them apart).
    fits = [json.loads((out / name / "fit.json").read_text()) for name in ("good", "good-2")]
    width = astronaut.shape[1]
    (left, top, right, bottom), (m_left, m_top, m_right, m_bottom) = (fit["face_box"] for fit in fits)
    assert abs(left - (width - 1 - m_right)) <= 2 and abs(right - (width - 1 - m_left)) <= 2 and abs(top - m_top) <= 2
    assert sorted(p.name for p in out.iterdir()) == ["good", "good-2"]


def test_bad_params_and_arguments(template_dir, model, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("reconstruct:\n  detect_max_side: 16\n")
    with pytest.raises(UserError, match=r"reconstruct.detect_max_side must be >= 64"):
        run(params, [], tmp_path / "out", model, template_dir, ["astronaut"])
    params.write_text("reconstruct:\n  max_side: 1024\n")
    with pytest.raises(UserError, match="unknown key"):
        run(params, [], tmp_path / "out", model, template_dir, ["astronaut"])
    with pytest.raises(UserError, match="no photos given"):
        run(PARAMS, [], tmp_path / "out", model, template_dir, [])
    with pytest.raises(UserError, match="unknown example 'moon'"):
        run(PARAMS, [], tmp_path / "out", model, template_dir, ["moon"])
    other = tmp_path / "inpainter-96.pt"
    save_inpainter(other, Generator(latent=4), 4, "coarse", 96)
    with pytest.raises(UserError, match="trained at 96x96"):
        run(PARAMS, [], tmp_path / "out", other, template_dir, ["astronaut"])


def test_a_user_error_has_no_traceback_from_the_console_script(template_dir, model, tmp_path):
    photo = tmp_path / "empty.png"
    photo.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "headtex", "reconstruct", str(photo),
                             *reconstruct_args(template_dir, model, tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {photo}: empty file, not an image"


def test_folder_names_are_unique():
    assert folder_names(["a/face.jpg", "b/face.png", "face", "c/face.jpg", "x.y.png"]) == \
        ["face", "face-2", "face-3", "face-4", "x.y"]


# ---- large photos: detect on a copy, sample the photo itself ----

def test_large_photo_detects_on_a_copy_and_samples_the_original(
        template, template_dir, model, astronaut, tmp_path, monkeypatch, capsys):
    """6000x6000 (the mechanism of the 20000x20000 case, which runs by hand: docs/RESULTS.md)."""
    zoom, left, top = 6, 1500, 2000
    head = astronaut[20:320, 80:380]
    canvas = np.full((6000, 6000, 3), 128, np.uint8)
    canvas[top:top + 300 * zoom, left:left + 300 * zoom] = cv2.resize(head, (300 * zoom, 300 * zoom))
    photo = write_image(tmp_path / "huge.png", canvas, params=(cv2.IMWRITE_PNG_COMPRESSION, 1))
    del canvas
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert code == 0, err
    fit = json.loads((tmp_path / "out" / "huge" / "fit.json").read_text())
    assert fit["image_size"] == [6000, 6000] and abs(fit["detection_downscale"] - 6000 / 1024) < 1e-3
    # The same face found in the small original, mapped into the big photo's pixels.
    config, pafs = params_for(ReconstructParams, "reconstruct"), params_for(PafsParams, "pafs")
    small = find_face(np.ascontiguousarray(head), config, pafs, template)
    expected = (small.landmarks + 0.5) * zoom - 0.5 + [left, top]
    error = np.linalg.norm(np.array(fit["landmarks"]) - expected, axis=1).mean()
    inter_ocular = np.linalg.norm(expected[36] - expected[45])
    assert error < 0.05 * inter_ocular
    # Sampled from the photo at (nearly) full resolution, not from the 5.9x smaller detection copy.
    assert fit["sampling"]["downscale"] < 1.5
    x0, y0, x1, y1 = fit["sampling"]["box"]
    margin = 20 * zoom  # the crown reaches a little above the pasted region
    assert left - margin <= x0 and x1 <= left + 300 * zoom + margin and top - margin <= y0 and y1 <= top + 300 * zoom
    # The texture matches the one from the 300 px original where both see the head.
    assets = load_assets(template_dir, model, UV_SIZE)
    reference = reconstruct(np.ascontiguousarray(head), template, jaw_region(template), assets.generator, "coarse",
                            config, pafs, assets.dense)
    partial, mask = read_png(tmp_path / "out" / "huge" / "partial.png"), read_png(tmp_path / "out" / "huge" / "mask.png")
    both = (mask > 0) & (reference.visible > 0)
    assert both.sum() > 0.8 * (reference.visible > 0).sum()
    difference = np.abs(partial[both].astype(float) - reference.paf[both]).mean()
    assert difference < 12.0


def test_sampling_crop_and_downscale_keep_the_texture(template, astronaut):
    config, pafs = params_for(ReconstructParams, "reconstruct"), params_for(PafsParams, "pafs")
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    face = find_face(big, config, pafs, template)
    from headtex.fitting import fit_landmarks

    fit = fit_landmarks(template, face.landmarks, **fit_arguments())
    whole, whole_visible, _ = partial_texture(big, template, fit, **texture_arguments())
    crop, crop_fit, box, factor = sampling_view(big, template, fit, 128)
    assert max(crop.shape[:2]) <= 128 and factor > 2 and box[2] - box[0] < 1024
    cropped, cropped_visible, _ = partial_texture(crop, template, crop_fit, **texture_arguments())
    both = (whole_visible > 0) & (cropped_visible > 0)
    # Same texels seen (the z-buffer at a coarser grid differs only at occlusion edges), same colours.
    assert both.sum() > 0.95 * (whole_visible > 0).sum()
    assert np.abs(whole[both].astype(float) - cropped[both]).mean() < 6.0


# ---- photos stored turned (no EXIF): straightened, or rejected; never a sideways texture with exit 0 ----

@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turned_photo_is_straightened(turns, example_run, template_dir, model, astronaut, tmp_path, monkeypatch,
                                      capsys):
    photo = write_image(tmp_path / "turned.png", np.ascontiguousarray(np.rot90(astronaut, turns)))
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert code == 0, err
    fit = json.loads((tmp_path / "out" / "turned" / "fit.json").read_text())
    upright = json.loads((example_run[0] / "demo" / "astronaut" / "fit.json").read_text())
    assert fit["photo_rotation_degrees"] == 90 * ((4 - turns) % 4) and upright["photo_rotation_degrees"] == 0
    assert any("turned" in note for note in fit["conversions"])
    # The same face as in the upright photo: landmarks (in the turned-back photo's pixels), pose, texture.
    np.testing.assert_allclose(fit["landmarks"], upright["landmarks"], atol=1.0)
    for angle in ("yaw", "pitch", "roll"):
        assert abs(fit["pose_degrees"][angle] - upright["pose_degrees"][angle]) < 1.0
    partial = read_png(tmp_path / "out" / "turned" / "partial.png").astype(int)
    reference = read_png(example_run[0] / "demo" / "astronaut" / "partial.png").astype(int)
    assert np.abs(partial - reference).mean() < 2.0


def test_sideways_face_found_by_the_cnn_is_straightened(astronaut, template):
    """dlib's mmod CNN finds a face lying on its side and the predictor would place an upright face in its box
    (the sideways texture with a healthy residual): the orientation check turns the photo first."""
    config = params_for(ReconstructParams, "reconstruct")
    cnn_only = params_for(PafsParams, "pafs", detector="cnn", fallback_detector=None)
    upright = find_face(astronaut, config, cnn_only, template)
    assert upright.detector == "cnn" and upright.quarter_turns == 0
    sideways = find_face(np.ascontiguousarray(np.rot90(astronaut)), config, cnn_only, template)
    assert sideways.detector == "cnn" and sideways.quarter_turns == 3
    assert np.linalg.norm(sideways.landmarks - upright.landmarks, axis=1).mean() < 3.0


def test_landmark_plausibility(astronaut, template):
    from headtex.detection import landmark_problem

    face = find_face(astronaut, params_for(ReconstructParams, "reconstruct"), params_for(PafsParams, "pafs"), template)
    landmarks = face.landmarks
    assert landmark_problem(landmarks) is None
    upside_down = landmarks * [1, -1] + [0, 512]
    assert "eyes below the mouth" in landmark_problem(upside_down)
    sideways = landmarks[:, ::-1] * [1, -1] + [0, 512]  # turned 90 degrees
    assert "tilted 8" in landmark_problem(sideways)  # the face rolls ~3 degrees
    assert "mirrored" in landmark_problem(landmarks * [-1, 1] + [512, 0])
    assert "collapsed" in landmark_problem(np.full((68, 2), 100.0))
    swapped = landmarks.copy()
    swapped[30] = landmarks[48:68].mean(axis=0) + [0, 20]  # nose tip under the mouth
    assert "nose tip" in landmark_problem(swapped)


def test_implausible_face_is_rejected_and_nothing_written(template_dir, model, astronaut, tmp_path, monkeypatch,
                                                         capsys):
    import headtex.detection

    real = headtex.detection.landmarks_in_box

    def upside_down(image, box):  # the predictor's points flipped within its box: eyes below the mouth
        points = real(image, box)
        return points * [1, -1] + [0, box.top() + box.bottom()]

    monkeypatch.setattr(headtex.detection, "landmarks_in_box", upside_down)
    photo = write_image(tmp_path / "odd.png", astronaut)
    code, _, err = command(monkeypatch, capsys, str(photo), *reconstruct_args(template_dir, model, tmp_path / "out"))
    assert_one_error_line(code, err, photo, "rejected: eyes below the mouth (face upside down); nothing written")
    assert not (tmp_path / "out" / "odd").exists()


def test_second_look_runs_only_where_a_larger_face_may_be_and_within_its_pixels(astronaut, template, monkeypatch):
    """The CNN's second look (its cost grows with its pixels): skipped for a confident frontal face, searching a
    copy of at most second_look_max_pixels otherwise, and looking closer, on a crop around it, only at a face HOG
    did not find."""
    import headtex.reconstruct.core as core

    real, seen = core.faces_found, []

    def recording(image, detector, upsample, factor=1.0):
        if detector == "cnn":
            seen.append(image.shape[0] * image.shape[1])
        return real(image, detector, upsample, factor)

    monkeypatch.setattr(core, "faces_found", recording)
    photo = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)  # the face: 18 % of the side
    config, pafs = params_for(ReconstructParams, "reconstruct"), params_for(PafsParams, "pafs")
    assert config.second_look_share > 0.18 and find_face(photo, config, pafs, template).detector == "hog"
    assert seen == []  # HOG is sure of its small frontal face (margin ~1.2): no CNN
    doubtful = params_for(ReconstructParams, "reconstruct", second_look_confident_score=10.0)
    face = find_face(photo, doubtful, pafs, template)
    # The CNN looked once, on a bounded copy, and only confirmed HOG's face: HOG's box is kept.
    assert len(seen) == 1 and seen[0] <= doubtful.second_look_max_pixels and face.detector == "hog"
    seen.clear()

    def a_second_face(image, detector, upsample, factor=1.0):  # the CNN reports a face HOG did not find
        found = recording(image, detector, upsample, factor)
        if detector != "cnn":
            return found
        side = image.shape[1] / 4
        return found + [core.Detection((1.0, 1.0, side, side), 1.0, np.zeros((68, 2)), "cnn", 0)]

    monkeypatch.setattr(core, "faces_found", a_second_face)
    find_face(photo, doubtful, pafs, template)
    # ... so it looked again, closer, on a crop around that face only (the face second_look_face_px wide in it).
    crop_side = (1 + 2 * doubtful.second_look_crop_margin) * doubtful.second_look_face_px
    assert len(seen) == 2 and seen[0] <= doubtful.second_look_max_pixels and 0 < seen[1] <= (crop_side + 1) ** 2


def test_a_cropped_and_downscaled_fit_keeps_the_correction_and_projects_the_same_head():
    """Photos are sampled (and their fidelity rendered) through the fit moved into a head crop: the non-rigid
    correction and the landmark weights must come along, and every vertex land where it did, scaled."""
    from headtex.fitting import Fit, scaled_fit
    from headtex.geometry import project

    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(50, 3)) * 40
    offsets = rng.normal(size=(50, 3)).astype(np.float32)
    fit = Fit(np.eye(3), 2.5, np.array([300.0, 220.0]), np.zeros(3), 1.5, np.arange(68), np.full(68, 0.5), offsets)
    moved = scaled_fit(fit, np.array([100.0, 40.0]), 4.0)
    assert moved.offsets is fit.offsets and moved.landmark_weights is fit.landmark_weights
    assert moved.landmark_ids is fit.landmark_ids and moved.residual == fit.residual
    before = project(vertices + offsets, fit.rotation, fit.scale, fit.translation)[:, :2]
    after = project(vertices + offsets, moved.rotation, moved.scale, moved.translation)[:, :2]
    np.testing.assert_allclose(after, (before - [100.0, 40.0] + 0.5) / 4.0 - 0.5, atol=1e-9)
