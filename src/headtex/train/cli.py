"""`headtex train`: read textures, mask bank and UV valid region, train, log with dvclive, checkpoint, ship.

Runs as one process, or one process per GPU under `torchrun` (WORLD_SIZE / LOCAL_RANK set): DDP with a
DistributedSampler; rank 0 alone logs, writes checkpoints and the model.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from headtex.datasets import PAFS, ShardRows, open_rows, open_textures, read_mask_bank, read_shard, read_valid
from headtex.inpaint import VGG16Features
from headtex.inpaint.model import ModelParams, save_inpainter
from headtex.inpaint.vgg import RANDOM_SEED
from headtex.figures import with_header
from headtex.io import UserError, write_json
from headtex.params import load_params, section
from headtex.progress import progress, report
from headtex.train.core import LOSS_NAMES, PartialDataset, TextureDataset, Trainer, TrainParams, resolve_device, sample_examples, sample_grid
from headtex.train.files import initialise_from, load_checkpoint, remove_checkpoint, save_checkpoint, set_rng_states

SAMPLE_COLUMNS = ["ground truth", "masked (holes white)", "coarse", "refined"]  # sample_grid's columns

def read_params(params_path: Path) -> tuple[ModelParams, TrainParams]:
    params = load_params(params_path)
    return section(params, "model", ModelParams), section(params, "train", TrainParams)


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size(), device) if world > 1 else (0, 1, device)


def open_live(live_dir: Path, resume: bool):
    from dvclive import Live

    # dvc.yaml declares our metrics and plots, so dvclive must not write one (dvcyaml=None); dvclive's test
    # mode (DVCLIVE_TEST) cannot take None (it calls os.fspath on it), and writes into a temporary folder anyway.
    test_mode = os.environ.get("DVCLIVE_TEST", "").lower() in ("1", "true", "yes")
    return Live(str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml="dvc.yaml" if test_mode else None)


def truncate_history(plots_dir: Path, step: int) -> None:
    """Drop dvclive rows logged at or after `step` (by a run interrupted after its last checkpoint)."""
    for tsv in Path(plots_dir, "metrics").rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines()
        column = header.split("\t").index("step")
        kept = [row for row in rows if int(row.split("\t")[column]) < step]
        tsv.write_text("\n".join([header, *kept]) + "\n")


def run(params_path: Path, textures_dir: Path, masks_dir: Path, valid_path: Path, out: Path,
        checkpoints_dir: Path, live_dir: Path, resume: bool = False, timing_path: Path | None = None,
        pafs_dir: Path | None = None) -> dict:
    """Train (or continue training with resume) and write the model; returns the summary logged to dvclive.
    With train.partials, the training identities' partial textures in `pafs_dir` are trained on too."""
    model_params, config = read_params(params_path)
    # Rows are read from the shards as batches ask for them: memory O(batch), not O(dataset) (docs/RESULTS.md)
    textures, identities = open_textures(textures_dir)
    size = textures.shape[1]
    if size % 4:
        raise UserError(f"{textures_dir}: texture size {size} is not divisible by 4 (the generator halves it twice)")
    bank = read_mask_bank(masks_dir, size) if config.p_real > 0 else np.zeros((0, size, size), np.uint8)
    valid = read_valid(valid_path, size)
    try:
        vgg = VGG16Features(config.vgg_weights)
    except ValueError as error:
        raise UserError(str(error)) from None
    partials = None
    if config.partials:
        if pafs_dir is None:
            raise UserError("train.partials needs the partial textures (--pafs data/pafs)")
        pafs, entries = open_rows(Path(pafs_dir), PAFS, "paf")
        visible, _ = open_rows(Path(pafs_dir), PAFS, "visible")
        owners = np.concatenate([read_shard(Path(pafs_dir), entry, PAFS, ("identity",))["identity"] for entry in entries])
        # the training identities' views only: never a test or mask-bank identity
        partials = PartialDataset(pafs, visible, np.flatnonzero(np.isin(owners, identities)), bank, valid, config)
    rank, world, device = setup_distributed(config.device)
    try:
        return _train(model_params, config, textures, identities, bank, valid, vgg, rank, world, device,
                      out, Path(checkpoints_dir), Path(live_dir), timing_path, resume, partials)
    finally:
        if world > 1:
            dist.destroy_process_group()


def mean_texture(textures: np.ndarray) -> np.ndarray:
    """The mean texture (U,U,3 uint8) of uint8 textures, accumulated in float64 one texture at a time."""
    total = np.zeros(textures.shape[1:], np.float64)
    for texture in textures:
        total += texture
    return np.rint(total / max(len(textures), 1)).astype(np.uint8)


def _start(trainer: Trainer, fingerprint: dict, checkpoints_dir: Path, resume: bool, rank: int) -> dict | None:
    """The checkpoint to continue from (its state loaded into the trainer), or None to start over."""
    checkpoint = load_checkpoint(checkpoints_dir) if resume else None
    if checkpoint is None:
        if rank == 0:
            remove_checkpoint(checkpoints_dir)  # a stale checkpoint of other settings must never be resumed
        return None
    changed = sorted(k for k in fingerprint.keys() | checkpoint["fingerprint"].keys()
                     if fingerprint.get(k) != checkpoint["fingerprint"].get(k))
    if changed:
        raise UserError(f"{checkpoint['path']}: written with other settings or data ({', '.join(changed)}); "
                        "run without --resume to start over")
    trainer.load_state_dict(checkpoint)
    set_rng_states(checkpoint["rng"])
    return checkpoint


def _log_losses(live, prefix: str, sums: dict[str, float], steps: int, lr: tuple[float, float]) -> dict[str, float]:
    """Log the mean losses of `steps` steps and the learning rates under `prefix`/; returns the means.

    Speed is not logged here: dvclive's files are git-tracked and must not change between identical runs.
    """
    means = {name: sums[name] / steps for name in LOSS_NAMES}
    for name, value in means.items():
        live.log_metric(f"{prefix}/{name}", value)
    live.log_metric(f"{prefix}/lr_g", lr[0])
    live.log_metric(f"{prefix}/lr_d", lr[1])
    return means


def _train_epoch(trainer: Trainer, loader: DataLoader, live, config: TrainParams, world: int, rank: int,
                 epoch: int) -> tuple[dict[str, float], int]:
    """One pass over the loader: the loss sums of the epoch and the images seen (all processes).

    dvclive gets the mean of every `log_every` steps; the epoch's own figures share its last step.
    """
    epoch_sums, interval_sums = dict.fromkeys(LOSS_NAMES, 0.0), dict.fromkeys(LOSS_NAMES, 0.0)
    images, interval_steps = 0, 0
    for step, (texture, hole, scored) in enumerate(progress(loader, f"train epoch {epoch + 1}/{config.epochs}", rank), 1):
        losses = trainer.train_step(texture, hole, scored)
        for name in LOSS_NAMES:
            epoch_sums[name] += losses[name]
            interval_sums[name] += losses[name]
        images, interval_steps = images + len(texture) * world, interval_steps + 1
        if live is not None and (interval_steps == config.log_every or step == len(loader)):
            _log_losses(live, "batch", interval_sums, interval_steps, trainer.learning_rates())
            if step < len(loader):
                live.next_step()
            interval_sums, interval_steps = dict.fromkeys(LOSS_NAMES, 0.0), 0
    return epoch_sums, images


def _summary(trainer: Trainer, model_params: ModelParams, config: TrainParams, textures: int, bank: int, world: int,
             vgg: VGG16Features) -> dict:
    """What was trained, for the dvclive summary (git-tracked: no times here)."""
    return {
        "epochs": config.epochs, "steps": trainer.step_count, "train_textures": textures, "mask_bank": bank,
        "world_size": world, "device": trainer.device.type, "precision": str(trainer.dtype).removeprefix("torch."),
        "arch": model_params.arch, "latent": model_params.latent, "generator_parameters": sum(p.numel() for p in trainer.generator.parameters()),
        "vgg_pretrained": vgg.pretrained, "vgg": "imagenet" if vgg.pretrained else f"random (seed {RANDOM_SEED})",
        "ship_output": config.ship_output,
    }


def _train(model_params: ModelParams, config: TrainParams, textures: np.ndarray | ShardRows, identities: np.ndarray,
           bank: np.ndarray, valid: np.ndarray, vgg: VGG16Features, rank: int, world: int, device: torch.device,
           out: Path, checkpoints_dir: Path, live_dir: Path, timing_path: Path | None, resume: bool,
           partials: PartialDataset | None = None) -> dict:
    size = textures.shape[1]
    trainer = Trainer(model_params.latent, config, vgg, device, distributed=world > 1, arch=model_params.arch,
                      size=size)
    if config.init_from is not None:
        initialise_from(Path(config.init_from), trainer.generator, trainer.critic, model_params.arch,
                        model_params.latent, size)
    # after init_from: symres sees the mean of the textures it is trained on now
    trainer.set_prior(mean_texture(textures), valid)
    fingerprint = {**config.fingerprint(), "arch": model_params.arch, "latent": model_params.latent, "world_size": world,
                   "textures": len(textures), "identities": int(identities.sum()), "mask_bank": len(bank),
                   "partials": 0 if partials is None else len(partials)}
    # The global RNGs are not drawn from by training (it seeds its own generators), but a checkpoint saves
    # them for code added later: seeded, identical runs write identical checkpoints (a DVC output).
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    checkpoint = _start(trainer, fingerprint, checkpoints_dir, resume, rank)
    start_epoch = int(checkpoint["epoch"]) if checkpoint is not None else 0
    live = open_live(live_dir, resume=checkpoint is not None) if rank == 0 else None
    if live is not None and checkpoint is not None:
        live.step = int(checkpoint["live_step"])
        truncate_history(Path(live.plots_dir), live.step)

    parts = [TextureDataset(textures, identities, bank, valid, config), *([partials] if partials is not None else [])]
    dataset = ConcatDataset(parts)
    # the same sampler in one process (world 1) and under torchrun: the order depends on seed and epoch only
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(dataset, config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    grid_textures, grid_holes = sample_examples(textures, identities, bank, valid, config)

    started, images_seen, epoch_rates = time.perf_counter(), 0, []
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        for part in parts:
            part.set_epoch(epoch)
        trainer.set_epoch(epoch)
        epoch_started = time.perf_counter()
        epoch_sums, epoch_images = _train_epoch(trainer, loader, live, config, world, rank, epoch)
        images_seen += epoch_images
        epoch_rates.append(round(epoch_images / (time.perf_counter() - epoch_started), 3))
        if rank == 0:
            means = _log_losses(live, "epoch", epoch_sums, len(loader), trainer.learning_rates())
            holes = torch.from_numpy(grid_holes)
            image, coarse, refined = trainer.predict(torch.from_numpy(grid_textures), holes)
            live.log_image(f"samples/epoch-{epoch + 1:03d}.png",
                           with_header(sample_grid(image, holes, coarse, refined), SAMPLE_COLUMNS))
            live.next_step()
            save_checkpoint(checkpoints_dir, trainer.state_dict(), epoch + 1, live.step, fingerprint)
            report(f"train epoch {epoch + 1}/{config.epochs}: first mask L1 {means['first_mask_l1']:.4f}, "
                   f"second {means['second_mask_l1']:.4f}, D {means['d_loss']:.3f}, {epoch_rates[-1]:.2f} images/s")
        if world > 1:
            dist.barrier()  # nobody races ahead of (or reads) a half-written checkpoint

    seconds = time.perf_counter() - started
    summary = _summary(trainer, model_params, config, len(textures), len(bank), world, vgg)
    timing = {"train_seconds": round(seconds, 2),
              "images_per_second": round(images_seen / seconds, 3) if images_seen else None,
              "epoch_images_per_second": epoch_rates}
    if rank == 0:
        save_inpainter(out, trainer.generator, model_params.latent, config.ship_output, textures.shape[1],
                       critic=trainer.critic)
        live.summary.update(summary)
        live.end()
        if timing_path is not None:
            write_json(timing_path, timing)
        summary["live_dir"] = live.dir
    return {**summary, **timing}


def bench(params_path: Path, latent: int, batch_size: int, steps: int, device_name: str, precision: str,
          size: int = 192, compile: bool = False, arch: str | None = None, channels_last: bool | None = None,
          deterministic: bool | None = None) -> str:
    """Median training images/s of the full step (critic + generator + VGG) on synthetic smooth textures."""
    import platform

    model_params, config = read_params(params_path)
    arch = arch or model_params.arch
    config = dataclasses.replace(config, batch_size=batch_size, device=device_name, precision=precision, compile=compile,
                                 deterministic=config.deterministic if deterministic is None else deterministic)
    device = resolve_device(device_name)
    trainer = Trainer(latent, config, VGG16Features(), device, arch=arch, size=size, channels_last=channels_last)
    rng = np.random.default_rng(0)
    # smooth random colours (upsampled noise) and a square hole in the middle third: the speed does not
    # depend on the content, only the sizes
    coarse = rng.integers(0, 256, (batch_size, 6, 6, 3), dtype=np.uint8)
    texture = torch.from_numpy(np.repeat(np.repeat(coarse, size // 6 + 1, 1), size // 6 + 1, 2)[:, :size, :size].copy())
    hole = torch.zeros(batch_size, size, size)
    hole[:, size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1
    seconds = []
    for step in range(steps + 1):  # the first step (allocation, autotuning, compilation) is not counted
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        trainer.train_step(texture, hole)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            seconds.append(time.perf_counter() - tick)
    median = float(np.median(seconds))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    precision = str(trainer.dtype).removeprefix("torch.")
    return (f"train step {arch} latent {latent}, {size}x{size}, batch {batch_size}, {precision}"
            f"{', compiled' if compile else ''}{', channels_last' if trainer.channels_last else ''}"
            f"{', deterministic' if config.deterministic else ', oneDNN'} on {device.type} ({name}, {torch.get_num_threads()} threads): "
            f"median {median:.3f} s/step = {batch_size / median:.2f} images/s over {steps} steps")
