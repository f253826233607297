"""train stage: data conventions, one training step, NaN stop, checkpoints and resume, dvclive output, DDP."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from headtex.inpaint import VGG16Features
from headtex.datasets import write_index
from headtex.io import UserError, save_npz, write_png
from headtex.inpaint.model import inpaint
from headtex.masking import hole_from_visible
from headtex.train.core import (
    TextureDataset, Trainer, TrainParams, learning_rate_factor, sample_examples, sample_grid, training_example,
)
from headtex.inpaint.model import ModelParams, load_inpainter
from headtex.train.files import CHECKPOINT_NAME
from conftest import REPO, params_for

SIZE = 32  # tiny textures: the generator needs a multiple of 4, the critic 32 for one patch
IDENTITIES = 6
THESIS_WEIGHTS = {"lambda_perceptual": 10.0, "lambda_gan": 10.0}  # the full GAN step (params.yaml's symres: L1 only)


def smooth_textures(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields (bilinear upsampling of 4x4 noise): learnable structure, like skin."""
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (size, size),
                                interpolation=cv2.INTER_LINEAR) for _ in range(count)])


def valid_region(size: int) -> np.ndarray:
    """On the head except the two top corners (asymmetric on purpose, to exercise flips)."""
    valid = np.ones((size, size), bool)
    valid[:4, :6] = False
    valid[:3, -3:] = False
    return valid


@pytest.fixture
def data(tmp_path) -> dict:
    textures_dir, masks_dir = tmp_path / "textures", tmp_path / "masks"
    textures = smooth_textures(IDENTITIES, SIZE)
    identities = np.arange(10, 10 + IDENTITIES)
    save_npz(textures_dir / "shard-00000.npz", textures=textures[:4], identity=identities[:4])
    save_npz(textures_dir / "shard-00001.npz", textures=textures[4:], identity=identities[4:])
    write_index(textures_dir, [{"file": "shard-00000.npz", "identities": identities[:4].tolist(), "count": 4},
                               {"file": "shard-00001.npz", "identities": identities[4:].tolist(), "count": 2}])
    bank = np.full((3, SIZE, SIZE), 255, np.uint8)
    bank[0, :, : SIZE // 2] = 0  # left half occluded
    bank[1, SIZE // 4:, SIZE // 3:] = 0
    bank[2, 8:20, 8:20] = 0
    save_npz(masks_dir / "shard-00000.npz", masks=bank, identity=np.arange(3), view=np.zeros(3, np.int16))
    write_index(masks_dir, [{"file": "shard-00000.npz", "identities": [0, 1, 2], "count": 3}])
    write_png(tmp_path / "valid.png", valid_region(SIZE).astype(np.uint8) * 255)
    return {"root": tmp_path, "textures": textures_dir, "masks": masks_dir, "valid": tmp_path / "valid.png",
            "texture_array": textures, "bank": bank}


def write_params(path: Path, **train) -> Path:
    """The repository's params.yaml with a tiny, fast training."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["masks"].update(p_real=0.5, max_strokes=6)
    params["model"]["latent"] = 4
    params["train"].update({"epochs": 2, "batch_size": 2, "lr_g": 1e-3, "lr_d": 1e-3, "lr_decrease_epoch": 1,
                            "seed": 3, "log_every": 1, "init_from": None, "partials": False,
                            **train})  # the shipped checkpoint: another latent; partials: test_partials_*
    path.write_text(yaml.safe_dump(params))
    return path


def run_train(data: dict, params: Path, tag: str, resume: bool = False, live: Path | None = None,
              pafs: Path | None = None) -> dict:
    from headtex.train.cli import run

    root = data["root"]
    return run(params, data["textures"], data["masks"], data["valid"], root / tag / "inpainter.pt",
               root / tag / "checkpoints", live or root / tag / "live", resume=resume, pafs_dir=pafs)


def fixed_batch(config: TrainParams, data: dict, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [training_example(data["texture_array"][i], 10 + i, 0, data["bank"], valid_region(SIZE), config)
             for i in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


# ---- data conventions ----

def test_hole_channel_is_one_minus_visible_on_the_head_only():
    visible = np.array([[255, 0], [0, 255]], np.uint8)
    valid = np.array([[True, True], [False, True]])
    np.testing.assert_array_equal(hole_from_visible(visible, valid), [[0, 1], [0, 0]])  # off-head: known


def test_training_example_masks_flips_and_seeding(data):
    valid = valid_region(SIZE)
    config = params_for(TrainParams, "train", p_real=1.0, p_blob=0.0, seed=5, flips=True)
    texture = data["texture_array"][0]
    seen_flip, seen_plain = False, False
    for epoch in range(12):
        out, hole = training_example(texture, 10, epoch, data["bank"], valid, config)
        flipped = np.array_equal(out, texture[:, ::-1])
        assert flipped or np.array_equal(out, texture)
        seen_flip |= flipped
        seen_plain |= not flipped
        region = valid & valid[:, ::-1] if flipped else valid
        # with p_real = 1 the hole is a bank mask, restricted to the head
        assert any(np.array_equal(hole, (bank == 0) & region) for bank in data["bank"])
        again = training_example(texture, 10, epoch, data["bank"], valid, config)
        assert np.array_equal(again[0], out) and np.array_equal(again[1], hole)  # seeded by (seed, identity, epoch)
    assert seen_flip and seen_plain
    no_flips = params_for(TrainParams, "train", p_real=1.0, p_blob=0.0, seed=5, flips=False)
    assert all(np.array_equal(training_example(texture, 10, e, data["bank"], valid, no_flips)[0], texture)
               for e in range(6))
    strokes = params_for(TrainParams, "train", p_real=0.0, max_strokes=6)
    _, hole = training_example(texture, 10, 0, data["bank"], valid, strokes)
    assert 0 < hole.mean() < 1 and hole[~valid].max() == 0



def test_warp_moves_features_by_a_few_texels_smoothly_and_leaves_the_hole_alone(data):
    """train.warp_texels: the texture's features move (as a real photo's fit misplaces them), by about the std and
    alike for neighbours; the hole, the flip and the seeding are those of the unwarped example."""
    valid = np.ones((64, 64), bool)
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[30:34, 20:24] = 255  # one small bright feature
    bank = np.full((1, 64, 64), 255, np.uint8)
    bank[0, :, :20] = 0
    plain = params_for(TrainParams, "train", p_real=1.0, p_blob=0.0, seed=5, flips=False)
    warped = dataclasses.replace(plain, warp_texels=2.0)
    shifts = []
    for epoch in range(8):
        out, hole = training_example(texture, 10, epoch, bank, valid, warped)
        np.testing.assert_array_equal(hole, training_example(texture, 10, epoch, bank, valid, plain)[1])
        np.testing.assert_array_equal(out, training_example(texture, 10, epoch, bank, valid, warped)[0])  # seeded
        ys, xs = np.nonzero(out[..., 0] > 127)
        assert 4 <= len(ys) <= 36  # the feature is moved whole, not torn apart or smeared away
        shifts.append(np.hypot(ys.mean() - 31.5, xs.mean() - 21.5))
    assert 0.3 < np.median(shifts) < 8 and max(shifts) > 1  # it moves, by texels, not tens of them
    flat = np.full((64, 64, 3), 120, np.uint8)
    np.testing.assert_array_equal(training_example(flat, 10, 0, bank, valid, warped)[0], flat)

def test_training_dataset_reads_rows_from_the_shards_when_asked(data):
    """The train stage's dataset streams: items equal the in-memory dataset's, and a row is read from its
    shard when the item is asked for (bytes changed on disk after opening show up), not held from the start."""
    from torch.utils.data import DataLoader

    from headtex.datasets import open_textures

    config = params_for(TrainParams, "train", p_real=0.5, max_strokes=6, seed=2)
    rows, identities = open_textures(data["textures"])
    streamed = TextureDataset(rows, identities, data["bank"], valid_region(SIZE), config)
    in_memory = TextureDataset(data["texture_array"], identities, data["bank"], valid_region(SIZE), config)
    for dataset in (streamed, in_memory):
        dataset.set_epoch(1)
    for index in range(IDENTITIES):
        (a, hole_a, scored_a), (b, hole_b, scored_b) = streamed[index], in_memory[index]
        assert torch.equal(a, b) and torch.equal(hole_a, hole_b) and torch.equal(scored_a, scored_b)
        assert scored_a.min() == 1  # a complete texture is scored everywhere
    # two worker processes read through their own file handles, batches as in memory
    worker_batches = [batch[0] for batch in DataLoader(streamed, 3, num_workers=2)]
    assert all(torch.equal(x, y[0]) for x, y in zip(worker_batches, DataLoader(in_memory, 3)))
    shard = data["textures"] / "shard-00001.npz"
    with open(shard, "r+b") as handle:  # overwrite the last texture's bytes in place (its .npy data ends the entry
        handle.seek(rows.parts[1][1] + rows.row_bytes)  # ... at the offset the reader computed)
        handle.write(bytes(rows.row_bytes))
    assert rows[5].max() == 0 and np.array_equal(rows[4], data["texture_array"][4])


def test_learning_rate_schedule():
    config = params_for(TrainParams, "train", lr_decrease_epoch=10, lr_decrease_factor=0.5)
    assert [learning_rate_factor(e, config) for e in (0, 9, 10, 19, 20)] == [1, 1, 0.5, 0.5, 0.25]


def test_bad_params_are_user_errors(tmp_path, data):
    with pytest.raises(UserError, match="ship_output"):
        params_for(TrainParams, "train", ship_output="best")
    assert params_for(TrainParams, "train", lr_g="2e-4").lr_g == 2e-4  # PyYAML reads 2e-4 as a string
    with pytest.raises(UserError, match="lr_d must be a number"):
        params_for(TrainParams, "train", lr_d="fast")
    with pytest.raises(UserError, match="masks.p_real is missing"):
        params = yaml.safe_load(write_params(tmp_path / "p.yaml").read_text())
        del params["masks"]["p_real"]
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
        run_train(data, tmp_path / "p.yaml", "x")
    write_png(data["valid"], np.full((SIZE + 4, SIZE + 4), 255, np.uint8))
    with pytest.raises(UserError, match="valid.png"):
        run_train(data, write_params(tmp_path / "q.yaml"), "y")


def test_command_reports_user_errors_in_one_line(data, tmp_path, monkeypatch, capsys):
    from headtex.cli import main

    params = write_params(tmp_path / "params.yaml")
    monkeypatch.setattr(sys, "argv", ["headtex", "train", "--params", str(params), "--textures", str(tmp_path / "none"),
                                      "--masks", str(data["masks"]), "--valid", str(data["valid"])])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    missing = tmp_path / "none"
    assert capsys.readouterr().err.strip() == f"error: {missing / 'index.json'}: missing; run the blend stage first (`dvc repro blend`)"


# ---- training ----

def test_repeated_training_step_lowers_the_loss(data):
    # the full step (critic update, then generator update with L1 + perceptual + GAN) on one fixed batch:
    # the reconstruction losses fall; the WGAN terms are adversarial and need not
    config = params_for(TrainParams, "train", p_real=0.5, seed=0, lr_g=5e-4, lr_d=1e-4, **THESIS_WEIGHTS)
    trainer = Trainer(4, config, VGG16Features(), torch.device("cpu"))
    texture, hole = fixed_batch(config, data)
    losses = [trainer.train_step(texture, hole) for _ in range(15)]
    assert trainer.step_count == 15

    def l1(step: dict) -> float:
        return step["first_mask_l1"] + step["second_mask_l1"]

    assert np.mean([l1(step) for step in losses[-3:]]) < 0.9 * l1(losses[0])
    assert losses[-1]["first_mask_l1"] < losses[0]["first_mask_l1"]


def test_nan_loss_stops_naming_the_step_before_updating(data):
    config = params_for(TrainParams, "train", p_real=0.5, **THESIS_WEIGHTS)
    trainer = Trainer(4, config, VGG16Features(), torch.device("cpu"))
    texture, hole = fixed_batch(config, data)
    trainer.train_step(texture, hole)
    with torch.no_grad():
        trainer.generator.coarse.layers[0].conv.weight[0, 0, 0, 0] = float("nan")
    critic_before = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    with pytest.raises(UserError, match=r"diverged at step 2: non-finite loss \(d_loss=nan"):
        trainer.train_step(texture, hole)
    for key, value in trainer.critic.state_dict().items():
        if not key.endswith(("_u", "_v")):  # spectral-norm power iteration runs in every forward
            assert torch.equal(value, critic_before[key]), key


def test_sample_grid_and_inpaint_keep_known_texels(data):
    config = params_for(TrainParams, "train", p_real=1.0, p_blob=0.0)
    trainer = Trainer(4, config, VGG16Features(), torch.device("cpu"))
    texture, hole = fixed_batch(config, data)
    image, coarse, refined = trainer.predict(texture, hole)
    grid = sample_grid(image, hole, coarse, refined)
    assert grid.shape == (2 * SIZE, 4 * SIZE, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:SIZE, :SIZE], texture[0].numpy())  # GT column
    known = hole[0].numpy() == 0
    np.testing.assert_array_equal(grid[:SIZE, 2 * SIZE:3 * SIZE][known], texture[0].numpy()[known])
    visible = ((1 - hole.numpy()) * 255).astype(np.uint8)
    completed = inpaint(trainer.generator, texture.numpy(), visible, valid_region(SIZE))
    known = hole.numpy() == 0
    np.testing.assert_array_equal(completed[known], texture.numpy()[known])
    assert not np.array_equal(completed, texture.numpy())


def test_sample_grid_shows_holes_where_its_fixed_masks_are_missing(data):
    """The epoch sample grid (sample_examples + sample_grid): the four lowest identities, each with its fixed mask's
    hole; with p_real 1 that hole is a bank mask's missing texels on the head (never its kept ones), and the
    grid's masked column is white there and the texture everywhere else."""
    from headtex.inpaint.model import to_image

    config = params_for(TrainParams, "train", p_real=1.0, p_blob=0.0, seed=5)
    valid = valid_region(SIZE)
    order = np.array([4, 1, 5, 0, 3, 2])  # identities not sorted: the grid takes the lowest
    textures, identities = data["texture_array"][order], np.arange(10, 10 + IDENTITIES)[order]
    grid_textures, holes = sample_examples(textures, identities, data["bank"], valid, config)
    np.testing.assert_array_equal(grid_textures, data["texture_array"][:4])  # identities 10-13, in order
    assert holes.shape == (4, SIZE, SIZE) and set(np.unique(holes).tolist()) == {0.0, 1.0}
    bank_holes = [(mask < 128) & valid for mask in data["bank"]]
    for hole in holes:
        assert any(np.array_equal(hole == 1, missing) for missing in bank_holes)
    again = sample_examples(textures, identities, data["bank"], valid, config)[1]
    np.testing.assert_array_equal(again, holes)  # the same masks every epoch
    image = to_image(torch.from_numpy(grid_textures))
    grid = sample_grid(image, torch.from_numpy(holes), image, image)
    for row, (texture, hole) in enumerate(zip(grid_textures, holes == 1)):
        masked = grid[row * SIZE:(row + 1) * SIZE, SIZE:2 * SIZE]
        assert (masked[hole] == 255).all() and hole.any()
        np.testing.assert_array_equal(masked[~hole], texture[~hole])


def test_l1_weighting_sets_the_l1_term_the_generator_steps_on(data):
    """train.l1_weighting: `pixels` (the thesis) makes the step's L1 term the mean over every pixel-channel of the
    batch, `hole` the mean over samples of each one's L1 over its own hole. A batch with a small and a large hole:
    the step's generator loss (L1 terms only: params.yaml's perceptual and GAN weights are 0) is lambda_l1 times
    the term the setting names, recomputed here from the generator's output; the logged L1 parts are the same
    either way, and the two settings move the generator differently."""
    texture = torch.from_numpy(data["texture_array"][:2])
    hole = torch.zeros(2, SIZE, SIZE)
    hole[0, 4:8, 4:8] = 1  # 16 texels
    hole[1, 4:28, 2:30] = 1  # 672 texels
    steps, weights, vgg = {}, {}, VGG16Features()  # unused (perceptual weight 0): built once
    for weighting in ("pixels", "hole"):
        config = params_for(TrainParams, "train", seed=0, lambda_perceptual=0.0, lambda_gan=0.0,
                            l1_weighting=weighting)
        trainer = Trainer(4, config, vgg, torch.device("cpu"))
        image, coarse, refined = trainer.predict(texture, hole)  # the weights the step computes with
        error = [((out - image).abs() * hole[:, None]).double() for out in (coarse, refined)]
        if weighting == "pixels":
            term = sum(e.mean() for e in error)
        else:
            term = sum((e.sum(dim=(1, 2, 3)) / (3 * hole.sum(dim=(1, 2)))).mean() for e in error)
        steps[weighting] = trainer.train_step(texture, hole)
        assert steps[weighting]["g_total"] == pytest.approx(config.lambda_l1 * float(term), rel=1e-4), weighting
        weights[weighting] = torch.cat([p.detach().flatten() for p in trainer.generator.parameters()])
    # the small hole weighs 672/16 times more under `hole` than under `pixels`: a larger loss here
    assert steps["hole"]["g_total"] > 1.5 * steps["pixels"]["g_total"]
    for name in ("first_mask_l1", "second_mask_l1", "first_mask_l1_missing", "second_mask_l1_missing"):
        assert steps["hole"][name] == pytest.approx(steps["pixels"][name], rel=1e-6), name
    assert not torch.equal(weights["hole"], weights["pixels"])


# ---- the stage ----

def test_train_stage_writes_model_checkpoint_and_dvclive_logs(data, tmp_path):
    result = run_train(data, write_params(tmp_path / "params.yaml"), "run")
    assert result["steps"] == 6 and result["vgg"] == "random (seed 0)" and not result["vgg_pretrained"]
    generator, info = load_inpainter(data["root"] / "run" / "inpainter.pt")
    arch = params_for(ModelParams, "model").arch
    assert info == {"arch": arch, "latent": 4, "ship_output": "coarse", "uv_size": SIZE}  # params.yaml's arch
    torch.load(data["root"] / "run" / "inpainter.pt", weights_only=True)
    assert (data["root"] / "run" / "checkpoints" / CHECKPOINT_NAME).is_file()
    live = Path(result["live_dir"])
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 5 and metrics["epochs"] == 2 and metrics["device"] == "cpu"
    for name in ("first_mask_l1", "second_mask_l1", "first_mask_l1_missing", "perceptual", "gan", "d_loss",
                 "lr_g"):
        assert name in metrics["batch"] and name in metrics["epoch"]
    assert metrics["epoch"]["lr_g"] == pytest.approx(5e-4)  # halved after epoch 1 (lr_decrease_epoch 1)
    steps = (live / "plots" / "metrics" / "batch" / "first_mask_l1.tsv").read_text().splitlines()
    assert len(steps) == 1 + 6
    assert len((live / "plots" / "metrics" / "epoch" / "d_loss.tsv").read_text().splitlines()) == 1 + 2
    assert not (live / "plots" / "metrics" / "batch" / "images_per_second.tsv").exists()  # speed: timing file only
    assert sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir()) == \
        ["epoch-001.png", "epoch-002.png"]


def test_resume_after_interruption_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    """Interrupted mid-epoch and resumed with --resume: the same inpainter.pt bytes and dvclive rows as one run."""
    # real dvclive files (not its test mode, which writes to a new temporary folder each time), outside any repo
    monkeypatch.delenv("DVCLIVE_TEST", raising=False)
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml", epochs=3)
    run_train(data, params, "straight", live=tmp_path / "live_straight")

    original_step = Trainer.train_step

    def interrupted_step(self, texture, hole, scored=None):
        if self.step_count == 4:  # in the middle of epoch 2, after the checkpoint of epoch 1
            raise KeyboardInterrupt
        return original_step(self, texture, hole, scored)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        run_train(data, params, "resumed", live=tmp_path / "live_resumed")
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert not (data["root"] / "resumed" / "inpainter.pt").exists()
    result = run_train(data, params, "resumed", resume=True, live=tmp_path / "live_resumed")
    assert result["steps"] == 9

    # The whole shipped file (generator, critic, settings) is byte-identical, as docs/RESULTS.md promises.
    straight = (data["root"] / "straight" / "inpainter.pt").read_bytes()
    assert (data["root"] / "resumed" / "inpainter.pt").read_bytes() == straight
    assert set(torch.load(data["root"] / "resumed" / "inpainter.pt", weights_only=True)) >= {"generator", "critic"}
    for plot in ("batch/first_mask_l1.tsv", "epoch/d_loss.tsv"):
        a = (tmp_path / "live_straight" / "plots" / "metrics" / plot).read_text().splitlines()
        b = (tmp_path / "live_resumed" / "plots" / "metrics" / plot).read_text().splitlines()
        assert [row.split("\t")[:2] for row in a] == [row.split("\t")[:2] for row in b]  # steps, values


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(data, tmp_path):
    params = write_params(tmp_path / "params.yaml", epochs=1)
    checkpoint = data["root"] / "run" / "checkpoints" / CHECKPOINT_NAME
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=rf"{CHECKPOINT_NAME}: corrupt or unreadable training checkpoint"):
        run_train(data, params, "run", resume=True)
    torch.save({"generator": {}}, checkpoint)
    with pytest.raises(UserError, match="not a headtex training checkpoint"):
        run_train(data, params, "run", resume=True)
    run_train(data, params, "run")  # without --resume it starts over
    with pytest.raises(UserError, match="other settings or data.*lr_g"):
        run_train(data, write_params(tmp_path / "other.yaml", epochs=2, lr_g=2e-3), "run", resume=True)
    (data["root"] / "run" / "inpainter.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="inpainter.pt: corrupt"):
        load_inpainter(data["root"] / "run" / "inpainter.pt")


# ---- multi-process (torchrun's environment, gloo on CPU) ----

def _ddp_worker(rank: int, world: int, port: int, root: str, params: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), DVCLIVE_TEST="true")
    torch.set_num_threads(1)
    from headtex.train.cli import run

    root = Path(root)
    run(Path(params), root / "textures", root / "masks", root / "valid.png", root / out / "inpainter.pt",
        root / out / "checkpoints", root / out / "live")


@pytest.mark.slow  # ~15 s: two spawned processes import torch and join a gloo group
def test_ddp_two_processes_match_one_process_with_the_global_batch(data, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # 6 textures: per-process batch 1 x 2 processes = batch 2 in one process (same global order, mean gradients).
    # The two sum gradients in different orders; a GAN amplifies such rounding differences when the steps are
    # large against the weights, so: PyTorch's default init (Xavier gain 0.02 makes weights ~2e-3) and lr 1e-4.
    settings = dict(epochs=1, init_gain=None, lr_g=1e-4, lr_d=1e-4)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(data["root"]),
                                                   str(write_params(tmp_path / "ddp.yaml", batch_size=1, **settings)),
                                                   "ddp"), nprocs=2)
    run_train(data, write_params(tmp_path / "one.yaml", batch_size=2, **settings), "one")
    # compare what the generators compute: the conv biases in front of instance norm are cancelled by it, get
    # rounding-noise gradients, and Adam turns those into different (irrelevant) values
    ddp, _ = load_inpainter(data["root"] / "ddp" / "inpainter.pt")
    one, _ = load_inpainter(data["root"] / "one" / "inpainter.pt")
    config = params_for(TrainParams, "train", p_real=0.5)
    texture, hole = fixed_batch(config, data, count=3)
    image, hole = texture.permute(0, 3, 1, 2).float() / 127.5 - 1, hole[:, None]
    with torch.no_grad():
        for a, b in zip(ddp(image, hole), one(image, hole)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


# ---- architectures and train.init_from ----

def test_symres_trains_without_critic_and_vgg_when_their_weights_are_zero(data):
    """symres with L1 only: the critic is not trained (d_loss 0), the L1 on the holes falls, and at step 0 the
    shipped completion is the mirror-guided Poisson fill."""
    from headtex.inpaint.fills import fill_poisson_mirror

    config = params_for(TrainParams, "train", p_real=0.5, seed=0, lr_g=1e-3, lambda_perceptual=0.0, lambda_gan=0.0)
    trainer = Trainer(4, config, VGG16Features(), torch.device("cpu"), arch="symres", size=SIZE)
    trainer.set_prior(data["texture_array"].mean(0).astype(np.uint8), valid_region(SIZE))
    texture, hole = fixed_batch(config, data)
    _, coarse, _ = trainer.predict(texture, hole)
    masked = texture.numpy().copy()
    masked[hole.numpy() > 0] = 0
    start = inpaint(trainer.generator, masked, np.where(hole.numpy() > 0, 0, 255).astype(np.uint8),
                    valid_region(SIZE))
    for i in range(len(masked)):
        np.testing.assert_array_equal(start[i], fill_poisson_mirror(masked[i], hole[i].numpy() > 0))
    critic_before = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    losses = [trainer.train_step(texture, hole) for _ in range(12)]
    assert all(step["d_loss"] == 0.0 and step["gan"] == 0.0 and step["perceptual"] == 0.0 for step in losses)
    assert losses[-1]["first_mask_l1_missing"] < losses[0]["first_mask_l1_missing"]
    assert all(torch.equal(v, critic_before[k]) for k, v in trainer.critic.state_dict().items())


def test_symres2_trains_from_scratch_its_blend_and_residual(data):
    """symres2 from scratch (train.init_from null): the zero head learns (blend logit and residual move off zero)
    and the L1 on the holes falls from its start, the average of the two fills."""
    config = params_for(TrainParams, "train", p_real=0.5, seed=0, lr_g=1e-3, lambda_perceptual=0.0, lambda_gan=0.0,
                        init_from=None)
    trainer = Trainer(4, config, VGG16Features(), torch.device("cpu"), arch="symres2", size=SIZE)
    trainer.set_prior(data["texture_array"].mean(0).astype(np.uint8), valid_region(SIZE))
    assert not trainer.generator.head.weight.any()
    texture, hole = fixed_batch(config, data)
    losses = [trainer.train_step(texture, hole) for _ in range(12)]
    assert losses[-1]["first_mask_l1_missing"] < losses[0]["first_mask_l1_missing"]
    head = trainer.generator.head
    assert head.weight[3].abs().sum() > 0 and head.weight[:3].abs().sum() > 0


@pytest.mark.parametrize("arch", ["deepfillv2", "symres", "symres2"])
def test_init_from_starts_from_the_checkpoint_and_the_model_records_the_arch(data, tmp_path, arch):
    from headtex.inpaint import Critic, build_generator
    from headtex.inpaint.model import save_inpainter
    from headtex.train.core import build_networks

    torch.manual_seed(7)
    start, critic = build_generator(arch, 4, SIZE), Critic(4)
    save_inpainter(tmp_path / "pretrained.pt", start, 4, "coarse", SIZE, critic=critic, half=True)
    params = write_params(tmp_path / "params.yaml", epochs=1, init_from=str(tmp_path / "pretrained.pt"))
    params_data = yaml.safe_load(params.read_text())
    params_data["model"]["arch"] = arch
    params.write_text(yaml.safe_dump(params_data))
    config = params_for(TrainParams, "train", init_from=str(tmp_path / "pretrained.pt"))
    from headtex.train.files import initialise_from

    generator, fresh_critic = build_networks(4, config, arch, SIZE)
    initialise_from(tmp_path / "pretrained.pt", generator, fresh_critic, arch, 4, SIZE)
    for key, value in start.state_dict().items():
        torch.testing.assert_close(generator.state_dict()[key], value.half().float())
    for key, value in critic.state_dict().items():
        torch.testing.assert_close(fresh_critic.state_dict()[key], value.half().float())
    result = run_train(data, params, "init")
    assert result["arch"] == arch
    _, info = load_inpainter(data["root"] / "init" / "inpainter.pt")
    assert info["arch"] == arch


def test_a_run_with_init_from_trains_the_checkpoints_networks(data, tmp_path):
    """train.init_from: the networks the run trains (and ships) start from the model file's weights, not from
    train.seed's initialisation. Learning rates too small to move any weight (1e-30; 0 is out of range) make the
    shipped generator and critic the file's (an fp16 file: its half-precision values)."""
    from headtex.inpaint import Critic, build_generator
    from headtex.inpaint.model import save_inpainter
    from headtex.train.core import build_networks

    arch = params_for(ModelParams, "model").arch
    torch.manual_seed(7)
    start, critic = build_generator(arch, 4, SIZE), Critic(4)
    with torch.no_grad():  # a trained model: no zero-initialised layer left (symres2's head starts at 0)
        for parameter in [*start.parameters(), *critic.parameters()]:
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_inpainter(tmp_path / "pretrained.pt", start, 4, "coarse", SIZE, critic=critic, half=True)
    params = write_params(tmp_path / "params.yaml", epochs=1, lr_g=1e-30, lr_d=1e-30,
                          init_from=str(tmp_path / "pretrained.pt"))
    result = run_train(data, params, "init")
    assert result["steps"] == 3
    shipped = torch.load(data["root"] / "init" / "inpainter.pt", weights_only=True)
    seeded = build_networks(4, params_for(TrainParams, "train", seed=3), arch, SIZE)
    for name, network, initialised in (("generator", start, seeded[0]), ("critic", critic, seeded[1])):
        trained = dict(network.named_parameters())  # parameters: symres' prior and spectral norm's u, v are buffers
        assert trained
        for key, value in trained.items():
            torch.testing.assert_close(shipped[name][key].float(), value.detach().half().float(), rtol=0, atol=1e-12,
                                       msg=f"{name}.{key}")
        assert any(not torch.allclose(shipped[name][key].float(), value, atol=1e-3)
                   for key, value in initialised.named_parameters())  # train.seed's networks are others


def test_init_from_mismatch_is_one_line_naming_what_differs(data, tmp_path, monkeypatch, capsys):
    from headtex.cli import main
    from headtex.inpaint import Generator
    from headtex.inpaint.model import save_inpainter

    save_inpainter(tmp_path / "other.pt", Generator(8), 8, "coarse", 64)
    params = write_params(tmp_path / "params.yaml", init_from=str(tmp_path / "other.pt"))
    monkeypatch.setattr(sys, "argv", ["headtex", "train", "--params", str(params), "--textures", str(data["textures"]),
                                      "--masks", str(data["masks"]), "--valid", str(data["valid"]),
                                      "--out", str(tmp_path / "m.pt"), "--checkpoints", str(tmp_path / "ck"),
                                      "--live", str(tmp_path / "live")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    arch = params_for(ModelParams, "model").arch
    assert f"train.init_from was trained with other settings: model.arch deepfillv2 (params.yaml: {arch}), " \
           f"model.latent 8 (params.yaml: 4), uv.size 64 (params.yaml: {SIZE})" in err
    params = write_params(tmp_path / "params.yaml", init_from=str(tmp_path / "absent.pt"))
    with pytest.raises(SystemExit):
        main()
    assert "absent.pt: train.init_from names no file" in capsys.readouterr().err


def test_channels_last_on_cpu_computes_the_same_step(data):
    """`bench train --channels-last` on CPU: the layout changes the speed, not the losses."""
    config = params_for(TrainParams, "train", p_real=0.5, seed=0, **THESIS_WEIGHTS)
    texture, hole = fixed_batch(config, data)
    plain = Trainer(4, config, VGG16Features(), torch.device("cpu"), channels_last=False).train_step(texture, hole)
    last = Trainer(4, config, VGG16Features(), torch.device("cpu"), channels_last=True)
    assert last.channels_last and last.prepare(texture, hole)[0].is_contiguous(memory_format=torch.channels_last)
    stepped = last.train_step(texture, hole)
    for name, value in plain.items():
        assert stepped[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_auto_precision_on_cpu_is_bf16_only_where_it_is_fast_and_repeatability_is_not_asked():
    from headtex.train.core import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, deterministic=True) == torch.float32  # reruns must repeat byte for byte
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", cpu, deterministic=False) == (torch.bfloat16 if bf16 else torch.float32)
    assert resolve_precision("fp32", cpu, deterministic=False) == torch.float32


# ---- partial textures (train.partials) ----

def partial_data(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Two views per identity of the fixture: the texture seen on its left or right half (255 = seen)."""
    textures = np.repeat(data["texture_array"], 2, axis=0)
    visible = np.zeros((len(textures), SIZE, SIZE), np.uint8)
    visible[0::2, :, : SIZE * 2 // 3] = 255
    visible[1::2, :, SIZE // 3:] = 255
    return np.where(visible[..., None] == 255, textures, 0).astype(np.uint8), visible


def test_partial_example_hides_part_of_what_is_seen_and_scores_only_the_seen():
    """A partial's hole is every texel on the head that is not left known; the L1 is scored on its seen texels only,
    the texels whose truth the view holds; some seen texels are hidden (the task), the unseen ones never scored."""
    from headtex.train.core import partial_example

    valid = valid_region(SIZE)
    config = params_for(TrainParams, "train", p_real=0.4, p_blob=0.3, flips=False)
    paf, visible = partial_data(_fixture_arrays())
    hidden_seen = 0
    for epoch in range(8):
        texture, hole, scored = partial_example(paf[0], visible[0], 0, epoch, _fixture_arrays()["bank"], valid, config)
        seen = (visible[0] == 255) & valid
        np.testing.assert_array_equal(scored, seen.astype(np.float32))
        assert (hole[valid & ~seen] == 1).all() and hole[~valid].max() == 0
        hidden_seen += int((hole * scored).sum())
        again = partial_example(paf[0], visible[0], 0, epoch, _fixture_arrays()["bank"], valid, config)
        assert all(np.array_equal(a, b) for a, b in zip(again, (texture, hole, scored)))
    assert hidden_seen > 0


def _fixture_arrays() -> dict:
    bank = np.full((2, SIZE, SIZE), 255, np.uint8)
    bank[0, :, : SIZE // 2] = 0
    bank[1, 8:20, 8:20] = 0
    return {"texture_array": smooth_textures(IDENTITIES, SIZE), "bank": bank}


def test_scored_texels_alone_drive_the_loss():
    """What a partial texture holds where the view saw nothing (no truth) changes neither the loss nor the step."""
    config = params_for(TrainParams, "train", p_real=0.5, seed=0, lambda_perceptual=0.0, lambda_gan=0.0)
    texture = torch.from_numpy(smooth_textures(2, SIZE))
    hole = torch.zeros(2, SIZE, SIZE)
    hole[:, 8:24, 4:28] = 1
    scored = torch.ones(2, SIZE, SIZE)
    scored[:, :, 16:] = 0  # the right half was never seen: a hole, as every unseen texel of a partial
    hole[:, :, 16:] = 1
    other = texture.clone()
    other[:, :, 16:] = 255 - other[:, :, 16:]
    losses = []
    for truth in (texture, other):
        torch.manual_seed(0)
        trainer = Trainer(4, config, VGG16Features(None), torch.device("cpu"), arch="symres3", size=SIZE)
        losses.append(trainer.train_step(truth, hole, scored)["first_mask_l1"])
    assert losses[0] == losses[1] > 0


def test_partials_train_on_the_training_identities_views(data, tmp_path):
    """train.partials: the stage also trains on data/pafs rows of its training identities (another identity's
    views are left out), and without --pafs says what it needs."""
    from headtex.datasets import PAFS

    paf, visible = partial_data(data)
    identity = np.repeat(np.arange(10, 10 + IDENTITIES), 2)
    identity[-2:] = 99  # not a training identity (a test one): never trained on
    pafs = tmp_path / "pafs"
    save_npz(pafs / "shard-00000.npz", paf=paf, visible=visible, identity=identity,
             view=np.tile(np.arange(2, dtype=np.int16), IDENTITIES))
    write_index(pafs, [{"file": "shard-00000.npz", "identities": sorted(set(identity.tolist())), "count": len(paf)}])
    params = write_params(tmp_path / "params.yaml", partials=True, epochs=1)
    with pytest.raises(UserError, match="train.partials needs the partial textures"):
        run_train(data, params, "none")
    summary = run_train(data, params, "partials", pafs=pafs)
    # 6 textures + 10 views (5 training identities x 2; identity 99's 2 left out), batch 2
    assert summary["steps"] == (IDENTITIES + 2 * (IDENTITIES - 1)) // 2
