"""Speed of the faces stage: timed by `make bench` (pytest --benchmark-only --benchmark-enable); `make test` runs each
once, untimed (--benchmark-disable), for its asserts."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from headtex.faces.cli import _assets, run
from headtex.pool import tune_worker_process
from headtex.faces.core import FacesParams, identity_vertices, render_identity, sample_identity
from headtex.geometry import project, render_textured, rotation_matrix
from headtex.geometry.template import default_camera
from conftest import params_for

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(template_dir):
    tune_worker_process()  # what every faces worker does
    return _assets(str(template_dir))


def test_render_view_256(benchmark, assets):
    """One 256x256 view, 2x supersampled, back faces culled, as the faces stage renders it."""
    template = assets[0]
    identity = sample_identity(params_for(FacesParams, "faces"), 0, template.basis_names)
    scale, translation = default_camera(256)
    screen = project(identity_vertices(template, identity), rotation_matrix(20.0), scale, translation)
    image, _ = benchmark(render_textured, screen, template.faces, template.vertex_uv, template.albedo_render, 256,
                         identity.background, 2, True)
    assert image.shape == (256, 256, 3)


def test_render_identity_11_views(benchmark, assets):
    """One identity end to end in one process: sampling, albedo, two lit textures, 11 views."""
    template, regions, uv_regions = assets
    config = params_for(FacesParams, "faces")
    counter = iter(range(10**6))

    def one_identity():
        return render_identity(template, regions, uv_regions, sample_identity(config, next(counter), template.basis_names),
                               config.image_size, config.supersample)

    rendered = benchmark(one_identity)
    if benchmark.enabled:
        benchmark.extra_info["images_per_second_one_core"] = round(len(rendered.images) / benchmark.stats.stats.median, 1)
    assert rendered.images.shape == (11, 256, 256, 3)


def test_faces_stage_default_2_workers(benchmark, template_dir, stylegan_dir, tmp_path):
    """The whole stage at the embedded default on 2 workers, without the detection metric (the HOG redraws run).

    Untimed (`make test`): 4 identities, enough for the asserts.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["faces"]["detection_check_identities"] = 0
    if not benchmark.enabled:
        params["faces"]["identities"] = 4
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    metrics = benchmark.pedantic(run, args=(path, template_dir, tmp_path / "faces", tmp_path / "faces.json", 2),
                                 kwargs=dict(stylegan_dir=stylegan_dir), rounds=1, iterations=1)
    benchmark.extra_info["images"] = metrics["images"]
    benchmark.extra_info["images_per_second"] = metrics["images_per_second"]  # rendering + the HOG redraw check
    benchmark.extra_info["render_images_per_second"] = metrics["render_images_per_second"]
    assert metrics["images"] == params["faces"]["identities"] * len(params_for(FacesParams, "faces").yaw_degrees)
    assert np.isfinite(metrics["images_per_second"])
