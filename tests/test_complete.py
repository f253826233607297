"""complete: a partial texture + mask -> the shipped model's completion, one pair or two folders; every bad input
is one line and exit 1."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_headtex
from headtex.geometry.template import fill_invalid
from headtex.inpaint import Generator
from headtex.inpaint.model import inpaint, load_inpainter, save_inpainter
from headtex.io import read_png, write_png

SIZE = 32


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny untrained model at uv size 32 and a template folder whose valid.png is a disc (off-head corners)."""
    root = tmp_path_factory.mktemp("assets")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_inpainter(root / "inpainter.pt", Generator(latent=4), 4, "coarse", SIZE)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    valid = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 15 ** 2).astype(np.uint8) * 255
    write_png(root / "template" / "valid.png", valid)
    return root / "inpainter.pt", root / "template"


def partial_and_mask(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    partial = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[4 + seed: 20 + seed, 6:26] = 0
    partial[mask == 0] = 0
    return partial, mask


def command(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`headtex complete ...` in this process: (exit code, stdout, stderr)."""
    return run_headtex(monkeypatch, capsys, "complete", *args)


def options(assets) -> list[str]:
    return ["--model", str(assets[0]), "--template", str(assets[1])]


def expected(assets, partial: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the model's own `inpaint` paints, then off-head texels filled from their neighbours."""
    generator, info = load_inpainter(assets[0])
    valid = read_png(assets[1] / "valid.png") > 127
    return fill_invalid(inpaint(generator, partial[None], mask[None], valid, info["ship_output"])[0], valid)


def test_one_pair_keeps_known_texels_and_paints_holes_as_the_model_does(tmp_path, monkeypatch, capsys, assets):
    partial, mask = partial_and_mask(0)
    write_png(tmp_path / "partial.png", partial)
    write_png(tmp_path / "mask.png", mask)
    code, out, err = command(monkeypatch, capsys, tmp_path / "partial.png", tmp_path / "mask.png",
                             "--out", tmp_path / "texture.png", *options(assets))
    assert code == 0, err
    texture = read_png(tmp_path / "texture.png")
    valid = read_png(assets[1] / "valid.png") > 127
    known, hole = (mask == 255) & valid, (mask == 0) & valid
    np.testing.assert_array_equal(texture[known], partial[known])  # known texels bit-exact
    assert not np.array_equal(texture[hole], partial[hole])  # the holes are painted
    np.testing.assert_array_equal(texture, expected(assets, partial, mask))
    assert (texture[~valid] != 0).any()  # off-head texels filled, not left black
    assert "complete: 1 textures" in out


def test_folders_pair_by_name(tmp_path, monkeypatch, capsys, assets):
    pairs = {name: partial_and_mask(seed) for seed, name in enumerate(["b", "a", "c"])}
    for name, (partial, mask) in pairs.items():
        write_png(tmp_path / "partials" / f"{name}.png", partial)
        write_png(tmp_path / "masks" / f"{name}.png", mask)
    code, out, err = command(monkeypatch, capsys, tmp_path / "partials", tmp_path / "masks",
                             "--out", tmp_path / "out", *options(assets))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    for name, (partial, mask) in pairs.items():  # each with its own mask, as one pair alone would be
        np.testing.assert_array_equal(read_png(tmp_path / "out" / f"{name}.png"), expected(assets, partial, mask))


def assert_one_error_line(code: int, err: str, *parts: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], lines[0]


def bad_inputs(tmp_path: Path) -> dict:
    """name -> (partial, mask, a phrase the error line must hold)."""
    partial, mask = partial_and_mask(0)
    write_png(tmp_path / "partial.png", partial)
    write_png(tmp_path / "mask.png", mask)
    write_png(tmp_path / "big.png", np.zeros((SIZE * 2, SIZE * 2, 3), np.uint8))
    write_png(tmp_path / "big_mask.png", np.full((SIZE * 2, SIZE * 2), 255, np.uint8))
    (tmp_path / "text.png").write_text("not a png")
    grey = mask.copy()
    grey[0, 0] = 17
    write_png(tmp_path / "grey_mask.png", grey)
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((SIZE, SIZE, 3), np.uint16))
    return {
        "wrong size": ("big.png", "big_mask.png", "64x64 texels; the model completes 32x32"),
        "partial not an image": ("text.png", "mask.png", "not an image"),
        "mask not an image": ("partial.png", "text.png", "not an image"),
        "mask not binary": ("partial.png", "grey_mask.png", "mask not binary: values other than 0 and 255 (17)"),
        "size mismatch": ("partial.png", "big_mask.png", "mask is 64x64, its partial texture is 32x32"),
        "16-bit partial": ("deep.png", "mask.png", "uint16 image"),
        "no such partial": ("absent.png", "mask.png", "no such file"),
    }


@pytest.mark.parametrize("case", ["wrong size", "partial not an image", "mask not an image", "mask not binary",
                                  "size mismatch", "16-bit partial", "no such partial"])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, assets, case):
    partial, mask, phrase = bad_inputs(tmp_path)[case]
    code, _, err = command(monkeypatch, capsys, tmp_path / partial, tmp_path / mask, "--out", tmp_path / "t.png",
                           *options(assets))
    assert_one_error_line(code, err, phrase)
    assert not (tmp_path / "t.png").exists()


def test_missing_model_and_template_are_one_line(tmp_path, monkeypatch, capsys, assets):
    partial, mask = partial_and_mask(0)
    write_png(tmp_path / "partial.png", partial)
    write_png(tmp_path / "mask.png", mask)
    args = [tmp_path / "partial.png", tmp_path / "mask.png", "--out", tmp_path / "t.png"]
    code, _, err = command(monkeypatch, capsys, *args, "--model", tmp_path / "none.pt", "--template", assets[1])
    assert_one_error_line(code, err, "none.pt: missing")
    code, _, err = command(monkeypatch, capsys, *args, "--model", assets[0], "--template", tmp_path / "nowhere")
    assert_one_error_line(code, err, "nowhere: no head template here")
    write_png(tmp_path / "small" / "valid.png", np.full((16, 16), 255, np.uint8))
    code, _, err = command(monkeypatch, capsys, *args, "--model", assets[0], "--template", tmp_path / "small")
    assert_one_error_line(code, err, "template is not 32x32 texels")


def test_folders_that_do_not_pair_are_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys, assets):
    partial, mask = partial_and_mask(0)
    write_png(tmp_path / "partials" / "a.png", partial)
    write_png(tmp_path / "partials" / "b.png", partial)
    write_png(tmp_path / "masks" / "a.png", mask)
    code, _, err = command(monkeypatch, capsys, tmp_path / "partials", tmp_path / "masks", "--out", tmp_path / "out",
                           *options(assets))
    assert_one_error_line(code, err, "b.png: no mask of that name")
    # A bad file among good ones stops the batch before anything is written.
    write_png(tmp_path / "masks" / "b.png", np.full((SIZE, SIZE), 128, np.uint8))
    code, _, err = command(monkeypatch, capsys, tmp_path / "partials", tmp_path / "masks", "--out", tmp_path / "out",
                           *options(assets))
    assert_one_error_line(code, err, "b.png: mask not binary")
    assert not (tmp_path / "out").exists()
    code, _, err = command(monkeypatch, capsys, tmp_path / "partials", tmp_path / "masks" / "a.png",
                           "--out", tmp_path / "out", *options(assets))
    assert_one_error_line(code, err, "give two files or two folders")
    code, _, err = command(monkeypatch, capsys, tmp_path / "partials" / "a.png", tmp_path / "masks" / "a.png",
                           "--out", tmp_path / "a.jpg", *options(assets))
    assert_one_error_line(code, err, "a.jpg: the completed texture is written as PNG")


def test_reconstructs_partial_and_mask_complete_to_its_texture(tmp_path, monkeypatch, capsys, template_dir):
    """The same code path as reconstruct: its partial.png + mask.png, completed by `headtex complete` with the
    same model and template, give its texture.png exactly."""
    from conftest import REPO, params_for
    from headtex.geometry.uv import UVParams
    from headtex.reconstruct.cli import run

    size = params_for(UVParams, "uv").size
    with torch.random.fork_rng():
        torch.manual_seed(1)
        save_inpainter(tmp_path / "inpainter.pt", Generator(latent=4), 4, "coarse", size)
    run(REPO / "params.yaml", [], tmp_path / "demo", tmp_path / "inpainter.pt", template_dir, ["astronaut"], None, None)
    folder = tmp_path / "demo" / "astronaut"
    code, _, err = command(monkeypatch, capsys, folder / "partial.png", folder / "mask.png", "--out",
                           tmp_path / "texture.png", "--model", tmp_path / "inpainter.pt", "--template", template_dir)
    assert code == 0, err
    np.testing.assert_array_equal(read_png(tmp_path / "texture.png"), read_png(folder / "texture.png"))


@pytest.mark.parametrize("arch", ["symres", "symres2"])
def test_a_symres_model_completes_through_the_same_path(arch, tmp_path, monkeypatch, capsys, assets):
    """Every arch loads from its model file and goes through one code path; untrained, symres paints exactly the
    mirror-guided Poisson fill and symres2 the average of that fill and Navier-Stokes."""
    from headtex.inpaint import build_generator
    from headtex.inpaint.fills import fill_opencv, fill_poisson_mirror

    model = tmp_path / f"{arch}.pt"
    save_inpainter(model, build_generator(arch, 4, SIZE), 4, "coarse", SIZE)
    partial, mask = partial_and_mask(0)
    write_png(tmp_path / "partial.png", partial)
    write_png(tmp_path / "mask.png", mask)
    code, _, err = command(monkeypatch, capsys, tmp_path / "partial.png", tmp_path / "mask.png", "--out",
                           tmp_path / "out.png", "--model", model, "--template", assets[1])
    assert code == 0, err
    valid = read_png(assets[1] / "valid.png") > 127
    region = (mask == 0) & valid
    completed = read_png(tmp_path / "out.png")[region].astype(int)
    if arch == "symres":
        np.testing.assert_array_equal(completed, fill_poisson_mirror(partial, region)[region])
    else:
        blanked = np.where(region[..., None], 0, partial).astype(np.uint8)
        average = (fill_poisson_mirror(blanked, region).astype(int) + fill_opencv(blanked, region, "navier_stokes")) / 2
        assert np.abs(completed - average[region]).max() <= 0.5
