"""pafs speed benchmarks: timed by `make bench` (pytest --benchmark-only); `make test` runs each once, untimed.

Per image: dlib HOG detection + 68 landmarks, the template fit, the PAF (z-buffer, per-texel
projection, bilinear sampling); and the whole stage's throughput on 2 workers over faces-stage data.
"""
import json

import pytest

from headtex.detection import find_face
from headtex.fitting import fit_landmarks, jaw_region, partial_texture
from headtex.pafs.core import PafsParams, process_image
from headtex.geometry.template import lit_texture, render_view
from headtex.geometry import Light
import yaml

from conftest import REPO, fit_arguments, params_for, texture_arguments

YAW = 25.0


@pytest.fixture(scope="module")
def view(template):
    lit = lit_texture(template.albedo_render, template.vertices, template.faces, template.render_texel_triangle,
                      template.render_texel_barycentrics, Light())
    image, _ = render_view(template, template.vertices, lit, YAW, 256, background=(90, 120, 150))
    return image, find_face(image, [("hog", 1)]).landmarks


def test_bench_detect_hog_256(benchmark, view):
    detection = benchmark(find_face, view[0], [("hog", 1)])
    assert detection is not None


def test_bench_fit_landmarks(benchmark, template, view):
    jaw = jaw_region(template)
    fit = benchmark(fit_landmarks, template, view[1], **fit_arguments(jaw=jaw))
    assert abs(fit.pose[0] - YAW) < 10


def test_bench_partial_texture(benchmark, template, view):
    fit = fit_landmarks(template, view[1], **fit_arguments())
    paf, visible, _ = benchmark(partial_texture, view[0], template, fit, **texture_arguments())
    assert (visible > 0).mean() > 0.2


def test_bench_process_image(benchmark, template, view, dense):
    jaw = jaw_region(template)
    result = benchmark(process_image, view[0], template, params_for(PafsParams, "pafs"), jaw, dense)
    assert result is not None


def test_bench_stage_two_workers(benchmark, template_dir, stylegan_dir, tmp_path):
    """images/s of `headtex pafs` with 2 workers on 16 faces-stage identities x 11 views (untimed: 2 identities)."""
    from headtex.faces.cli import run as faces
    from headtex.pafs.cli import run as pafs

    identities = 16 if benchmark.enabled else 2
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["faces"].update(identities=identities, detection_check_identities=0)
    params["pafs"]["preview_identities"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    params = tmp_path / "params.yaml"
    faces(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", workers=2, stylegan_dir=stylegan_dir)
    metrics = benchmark.pedantic(pafs, args=(params, tmp_path / "faces", template_dir, tmp_path / "pafs",
                                             tmp_path / "pafs.json", 2), rounds=1, iterations=1)
    benchmark.extra_info.update({key: metrics[key] for key in ("images_per_second", "views_in", "workers")})
    print(json.dumps({key: metrics[key] for key in ("images_per_second", "worker_ms_per_image", "views_in")}))
    assert metrics["views_in"] == identities * 11
