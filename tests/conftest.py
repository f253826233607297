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
def template_dir(sdist, tmp_path_factory) -> Path:
    from headtex.template.cli import run

    folder = tmp_path_factory.mktemp("template")
    run(REPO / "params.yaml", sdist, folder / "template", folder / "template.json")
    return folder / "template"


@pytest.fixture(scope="session")
def template(template_dir):
    from headtex.template.files import load_template

    return load_template(template_dir)
