"""evaluate as a stage: the perceptual loss of Table 4.1 uses the network training used, whatever train.seed."""
from __future__ import annotations

import json

import numpy as np
import torch
import yaml

from conftest import REPO
from headtex.datasets import ShardWriter, write_index
from headtex.inpaint import Critic, Generator
from headtex.inpaint.model import save_inpainter
from headtex.io import write_png

SIZE = 32


def tiny_inputs(root):
    """Test and train textures, a mask bank, the valid region and an (untrained) model, at 32 x 32 texels."""
    rng = np.random.default_rng(0)
    for split, ids in (("test", range(4)), ("train", range(4, 8))):
        writer = ShardWriter(root / split, 16)
        for identity in ids:
            texture = np.kron(rng.integers(30, 230, (1, 4, 4, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)
            writer.add({"textures": texture, "identity": np.array([identity], np.int64)})
        writer.flush()
        write_index(root / split, writer.entries)
    bank = np.full((3, SIZE, SIZE), 255, np.uint8)
    bank[0, :, :12], bank[1, 8:, 10:], bank[2, 4:20, 4:28] = 0, 0, 0
    writer = ShardWriter(root / "masks", 16)
    writer.add({"masks": bank, "identity": np.zeros(3, np.int64), "view": np.arange(3, dtype=np.int16)})
    writer.flush()
    write_index(root / "masks", writer.entries)
    write_png(root / "valid.png", np.full((SIZE, SIZE), 255, np.uint8))
    torch.manual_seed(0)
    save_inpainter(root / "model.pt", Generator(4), 4, "coarse", SIZE, critic=Critic(4))


def evaluate(root, train_seed: int) -> dict:
    from headtex.evaluate.cli import run

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"].update(free_form_candidates=6, batch_size=2, real_photos=[])
    params["train"]["seed"] = train_seed
    path = root / f"params-{train_seed}.yaml"
    path.write_text(yaml.safe_dump(params))
    out = root / f"seed-{train_seed}"
    run(path, root / "test", root / "train", root / "masks", root / "valid.png", root / "model.pt", out / "eval.json",
        out / "timing.json", out / "figures", out / "psnr.json")
    return json.loads((out / "eval.json").read_text())


def test_table_4_1_does_not_depend_on_train_seed(tmp_path):
    """Training's perceptual loss uses one fixed random VGG whatever train.seed is; evaluate must use the same
    (it once seeded its VGG with train.seed, so Table 4.1 compared a different network than training used)."""
    tiny_inputs(tmp_path)
    default, other = evaluate(tmp_path, 0), evaluate(tmp_path, 5)
    assert default["table_4_1"]["perceptual"] > 0
    assert other["table_4_1"] == default["table_4_1"]


def test_plot_data_has_every_method_per_bucket_and_figures_have_headers(tmp_path):
    from headtex.evaluate.cli import BASELINES
    from headtex.io import read_png

    tiny_inputs(tmp_path)
    metrics = evaluate(tmp_path, 0)
    rows = json.loads((tmp_path / "seed-0" / "psnr.json").read_text())["psnr_by_bucket"]
    filled = [name for name, scores in metrics["by_bucket"].items() if name != "overall" and scores["count"]]
    assert filled and {row["bucket"] for row in rows} == {f"{n} (n={metrics['by_bucket'][n]['count']})" for n in filled}
    for name in filled:
        methods = [row["method"] for row in rows if row["bucket"].startswith(f"{name} (")]
        assert methods == ["coarse", "refined", *BASELINES]  # the shipped output first, then all the others
    for name in filled:
        figure = read_png(tmp_path / "seed-0" / "figures" / f"{name}.png")
        band = figure[:14]
        assert (band == 32).all(axis=2).mean() > 0.7 and (band > 200).all(axis=2).any()  # dark band, white text


def test_an_untrained_symres_scores_exactly_its_classical_starting_fill(tmp_path):
    """evaluate loads either arch from the model file; symres at step 0 is the mirror + Navier-Stokes baseline."""
    from headtex.inpaint import build_generator

    tiny_inputs(tmp_path)
    save_inpainter(tmp_path / "model.pt", build_generator("symres", 4, SIZE), 4, "coarse", SIZE, critic=Critic(4))
    metrics = evaluate(tmp_path, 0)
    for name, scores in metrics["by_bucket"].items():
        if scores["count"]:
            assert scores["coarse"]["psnr"] == scores["mirror_poisson"]["psnr"], name
            assert scores["coarse"]["ssim"] == scores["mirror_poisson"]["ssim"], name
