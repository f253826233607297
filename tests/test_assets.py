"""`headtex reconstruct` from any folder: params, template and model found without a checkout; one line when
one is missing, saying how to get it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headtex import assets
from headtex.geometry.uv import UVParams
from headtex.inpaint import Generator
from headtex.inpaint.model import save_inpainter
from conftest import params_for, run_headtex

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("head.obj", "head.mtl", "texture.png", "partial.png", "mask.png", "overlay.png", "preview.png", "photo.png")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "inpainter.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_inpainter(path, Generator(latent=4), 4, "coarse", params_for(UVParams, "uv").size)
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty folder outside any checkout as the working folder, an empty cache, no installed checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HEADTEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "installed_checkout", lambda: None)
    return folder


def command(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`headtex ...` in this process: (exit code, stdout, stderr)."""
    return run_headtex(monkeypatch, capsys, *args)


def same_outputs(first: Path, second: Path) -> None:
    for name in COMPARED:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    fits = [json.loads((folder / "fit.json").read_text()) for folder in (first, second)]
    for fit in fits:
        fit["model"].pop("file")  # where the model was found (fit.json holds no timings)
    assert fits[0] == fits[1]


def test_the_package_ships_the_repositorys_params_yaml():
    assert assets.packaged_params().read_bytes() == (REPO / "params.yaml").read_bytes()


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HEADTEX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "xdg" / "headtex"
    monkeypatch.setenv("HEADTEX_CACHE", str(tmp_path / "mine"))
    assert assets.cache_dir() == tmp_path / "mine"


def test_outside_a_checkout_the_cache_gives_the_same_files(elsewhere, template_dir, model, monkeypatch, capsys,
                                                           tmp_path):
    """From an empty folder, with the template and model in the cache folder and no option: the same files
    as the run with every path given explicitly from the repository."""
    cache = Path(os.environ["HEADTEX_CACHE"])
    cache.mkdir()
    (cache / "template").symlink_to(template_dir)
    (cache / "inpainter.pt").symlink_to(model)
    code, out, err = command(monkeypatch, capsys, "reconstruct", "--example", "astronaut", "--out", "demo")
    assert code == 0, err
    assert "demo/astronaut/head.obj" in out
    monkeypatch.chdir(REPO)
    code, _, err = command(monkeypatch, capsys, "reconstruct", "--example", "astronaut", "--out", str(tmp_path / "repo"),
                           "--model", str(model), "--template", str(template_dir), "--params", "params.yaml")
    assert code == 0, err
    same_outputs(elsewhere / "demo" / "astronaut", tmp_path / "repo" / "astronaut")
    fit = json.loads((elsewhere / "demo" / "astronaut" / "fit.json").read_text())
    assert fit["model"]["file"] == str(cache / "inpainter.pt")


def test_the_installed_checkout_is_found_from_another_folder(elsewhere, template_dir, model, monkeypatch, tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "models").mkdir(parents=True)
    (checkout / "models" / "template").symlink_to(template_dir)
    (checkout / "models" / "inpainter.pt").symlink_to(model)
    monkeypatch.setattr(assets, "installed_checkout", lambda: checkout)
    assert assets.find_template(None) == checkout / "models" / "template"
    assert assets.find_model(None) == checkout / "models" / "inpainter.pt"
    assert assets.find_params(None) == assets.packaged_params()
    # The working folder laid out as a checkout (DVC runs stages there) comes first; an option before all.
    (elsewhere / "params.yaml").write_text("uv: {}\n")
    assert assets.find_params(None) == Path("params.yaml")
    assert assets.find_model(tmp_path / "given.pt") == tmp_path / "given.pt"


@pytest.mark.parametrize("missing, given, problem", [
    ("template", (), "no head template here, in this folder's models/template or in the installed checkout; "
                     "build it once with `headtex template --out "),
    ("model", ("--template", "TEMPLATE"), "no inpainting model here, in this folder's models/ or in the installed "
                                          "checkout; in a checkout run `make repro`"),
])
def test_a_missing_asset_is_one_line_saying_how_to_get_it(missing, given, problem, elsewhere, template_dir,
                                                          monkeypatch, capsys):
    args = [str(template_dir) if a == "TEMPLATE" else a for a in given]
    code, _, err = command(monkeypatch, capsys, "reconstruct", "--example", "astronaut", "--out", "demo", *args)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    cached = assets.cache_dir() / ("template" if missing == "template" else "inpainter.pt")
    assert lines[0].startswith(f"error: {cached}: ") and problem in lines[0], lines[0]
    assert not (elsewhere / "demo").exists()


def test_no_params_anywhere_is_one_line(elsewhere, monkeypatch, capsys):
    monkeypatch.setattr(assets, "packaged_params", lambda: None)
    code, _, err = command(monkeypatch, capsys, "reconstruct", "--example", "astronaut", "--out", "demo")
    assert code == 1 and err.strip() == ("error: params.yaml: not in this folder and not shipped with the installed "
                                         "package; pass --params PATH (the repository's params.yaml)")


def test_console_script_from_an_empty_folder(template_dir, model, tmp_path):
    """The installed `headtex` in a folder with no params.yaml: the packaged one is used."""
    result = subprocess.run([str(Path(sys.executable).parent / "headtex"), "reconstruct", "--example", "astronaut",
                             "--out", "demo", "--model", str(model), "--template", str(template_dir)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "astronaut" / "texture.png").is_file() and not (tmp_path / "params.yaml").exists()


def test_the_cache_template_is_built_as_the_error_line_says(elsewhere, sdist, model, monkeypatch, capsys):
    """Outside a checkout: `headtex template --out <cache>/template` (packaged params; --source skips the
    download here), then reconstruct with no option finds it."""
    cached = assets.cache_dir() / "template"
    code, _, err = command(monkeypatch, capsys, "template", "--source", str(sdist), "--out", str(cached))
    assert code == 0, err
    assert assets.find_template(None) == cached
    cached.parent.joinpath("inpainter.pt").symlink_to(model)
    code, _, err = command(monkeypatch, capsys, "reconstruct", "--example", "astronaut", "--out", "demo")
    assert code == 0, err
    assert (elsewhere / "demo" / "astronaut" / "head.obj").is_file()
