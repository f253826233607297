"""`headtex train`: read textures, mask bank and UV valid region, train, log with dvclive, checkpoint, ship.

Runs as one process, or one process per GPU under `torchrun` (WORLD_SIZE / LOCAL_RANK set): DDP with a
DistributedSampler; rank 0 alone logs, writes checkpoints and the model.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from headtex.inpaint import VGG16Features
from headtex.io import UserError, iter_shards, read_png
from headtex.params import load_params, section
from headtex.train.core import (
    LOSS_NAMES, ModelParams, TextureDataset, Trainer, TrainParams, resolve_device, sample_examples, sample_grid,
)
from headtex.train.files import load_checkpoint, remove_checkpoint, save_checkpoint, save_inpainter, set_rng_states

VGG_RANDOM_SEED = 0  # one fixed random VGG for every experiment, so perceptual losses stay comparable


def read_params(params_path: Path) -> tuple[ModelParams, TrainParams]:
    params = load_params(params_path)
    masks = params.get("masks") or {}
    missing = [key for key in ("p_real", "max_strokes") if masks.get(key) is None]
    if missing:
        raise UserError(f"{params_path}: masks.{' and masks.'.join(missing)} missing "
                        "(train shares them with the masks stage)")
    return section(params, "model", ModelParams), section(params, "train", TrainParams, p_real=masks["p_real"],
                                                          max_strokes=masks["max_strokes"])


def read_textures(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All textures of a blend split (N,U,U,3 uint8) and their identities, in memory (11 GB at the thesis' 99k)."""
    textures, identities = [], []
    for entry, arrays in iter_shards(folder):
        path = Path(folder) / entry["file"]
        if "textures" not in arrays or "identity" not in arrays:
            raise UserError(f"{path}: expected arrays 'textures' and 'identity', found {sorted(arrays)}")
        shard, ids = arrays["textures"], arrays["identity"]
        if shard.dtype != np.uint8 or shard.ndim != 4 or shard.shape[3] != 3 or shard.shape[1] != shard.shape[2]:
            raise UserError(f"{path}: textures must be N,U,U,3 uint8, got {shard.shape} {shard.dtype}")
        if len(ids) != len(shard):
            raise UserError(f"{path}: {len(shard)} textures but {len(ids)} identities")
        textures.append(shard)
        identities.append(ids.astype(np.int64))
    if not textures or sum(len(t) for t in textures) == 0:
        raise UserError(f"{folder}: no textures")
    sizes = {t.shape[1] for t in textures}
    if len(sizes) > 1:
        raise UserError(f"{folder}: shards disagree on the texture size ({sorted(sizes)})")
    return np.concatenate(textures), np.concatenate(identities)


def read_mask_bank(folder: Path, size: int) -> np.ndarray:
    """The real-occlusion masks (N,U,U uint8, 255 = visible)."""
    masks = []
    for entry, arrays in iter_shards(folder):
        path = Path(folder) / entry["file"]
        bank = arrays.get("masks")
        if bank is None or bank.dtype != np.uint8 or bank.shape[1:] != (size, size):
            got = "no 'masks' array" if bank is None else f"{bank.shape} {bank.dtype}"
            raise UserError(f"{path}: masks must be N,{size},{size} uint8 like the textures, got {got}")
        masks.append(bank)
    if not masks or sum(len(m) for m in masks) == 0:
        raise UserError(f"{folder}: the mask bank is empty but masks.p_real > 0")
    return np.concatenate(masks)


def read_valid(path: Path, size: int) -> np.ndarray:
    valid = read_png(path)
    if valid.shape != (size, size):
        raise UserError(f"{path}: UV valid region is {valid.shape}, the textures are {size}x{size}")
    return valid > 0


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
        checkpoints_dir: Path, live_dir: Path, resume: bool = False) -> dict:
    """Train (or continue training with resume) and write the model; returns the summary logged to dvclive."""
    model_params, config = read_params(params_path)
    textures, identities = read_textures(textures_dir)
    size = textures.shape[1]
    if size % 4:
        raise UserError(f"{textures_dir}: texture size {size} is not divisible by 4 (the generator halves it twice)")
    bank = read_mask_bank(masks_dir, size) if config.p_real > 0 else np.zeros((0, size, size), np.uint8)
    valid = read_valid(valid_path, size)
    try:
        vgg = VGG16Features(config.vgg_weights, seed=VGG_RANDOM_SEED)
    except ValueError as error:
        raise UserError(str(error)) from None
    rank, world, device = setup_distributed(config.device)
    try:
        return _train(model_params, config, textures, identities, bank, valid, vgg, rank, world, device,
                      out, Path(checkpoints_dir), Path(live_dir), resume)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(model_params: ModelParams, config: TrainParams, textures: np.ndarray, identities: np.ndarray,
           bank: np.ndarray, valid: np.ndarray, vgg: VGG16Features, rank: int, world: int, device: torch.device,
           out: Path, checkpoints_dir: Path, live_dir: Path, resume: bool) -> dict:
    trainer = Trainer(model_params.latent, config, vgg, device, distributed=world > 1)
    fingerprint = {**config.fingerprint(), "latent": model_params.latent, "world_size": world,
                   "textures": len(textures), "identities": int(identities.sum()), "mask_bank": len(bank)}
    checkpoint = load_checkpoint(checkpoints_dir) if resume else None
    start_epoch = 0
    if checkpoint is not None:
        changed = sorted(k for k in fingerprint.keys() | checkpoint["fingerprint"].keys()
                         if fingerprint.get(k) != checkpoint["fingerprint"].get(k))
        if changed:
            raise UserError(f"{checkpoint['path']}: written with other settings or data ({', '.join(changed)}); "
                            "run without --resume to start over")
        trainer.load_state_dict(checkpoint)
        set_rng_states(checkpoint["rng"])
        start_epoch = int(checkpoint["epoch"])
    elif rank == 0:
        remove_checkpoint(checkpoints_dir)  # a stale checkpoint of other settings must never be resumed

    live = open_live(live_dir, resume=checkpoint is not None) if rank == 0 else None
    if live is not None and checkpoint is not None:
        live.step = int(checkpoint["live_step"])
        truncate_history(Path(live.plots_dir), live.step)

    dataset = TextureDataset(textures, identities, bank, valid, config)
    # the same sampler in one process (world 1) and under torchrun: the order depends on seed and epoch only
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(dataset, config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    grid_textures, grid_holes = sample_examples(textures, identities, bank, valid, config)

    started = time.perf_counter()
    images_seen = 0
    epoch_means: dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        trainer.set_epoch(epoch)
        lr_g, lr_d = trainer.learning_rates()
        sums = dict.fromkeys(LOSS_NAMES, 0.0)
        steps, epoch_images, epoch_started = 0, 0, time.perf_counter()
        progress = tqdm(loader, desc=f"train epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                        disable=True if rank else None)  # None: shown on a terminal only
        for texture, hole in progress:
            tick = time.perf_counter()
            losses = trainer.train_step(texture, hole)
            images = len(texture) * world
            steps, epoch_images = steps + 1, epoch_images + images
            for name in LOSS_NAMES:
                sums[name] += losses[name]
            if live is not None:
                for name in LOSS_NAMES:
                    live.log_metric(f"batch/{name}", losses[name])
                live.log_metric("batch/lr_g", lr_g)
                live.log_metric("batch/lr_d", lr_d)
                live.log_metric("batch/images_per_second", images / (time.perf_counter() - tick))
                if steps == len(loader):
                    epoch_means = {name: sums[name] / steps for name in LOSS_NAMES}
                    for name, value in epoch_means.items():
                        live.log_metric(f"epoch/{name}", value)
                    live.log_metric("epoch/lr_g", lr_g)
                    live.log_metric("epoch/lr_d", lr_d)
                    live.log_metric("epoch/images_per_second", epoch_images / (time.perf_counter() - epoch_started))
                    live.log_metric("epoch/epoch", epoch + 1)
                    holes = torch.from_numpy(grid_holes)
                    image, coarse, refined = trainer.predict(torch.from_numpy(grid_textures), holes)
                    live.log_image(f"samples/epoch-{epoch + 1:03d}.png", sample_grid(image, holes, coarse, refined))
                live.next_step()
            progress.set_postfix(l1=f"{losses['first_mask_l1']:.4f}", d=f"{losses['d_loss']:.3f}")
        images_seen += epoch_images
        if rank == 0:
            save_checkpoint(checkpoints_dir, trainer.state_dict(), epoch + 1, live.step, fingerprint)
            tqdm.write(f"train epoch {epoch + 1}/{config.epochs}: first mask L1 {epoch_means['first_mask_l1']:.4f}, "
                       f"second {epoch_means['second_mask_l1']:.4f}, D {epoch_means['d_loss']:.3f}, "
                       f"{epoch_images / (time.perf_counter() - epoch_started):.2f} images/s")
        if world > 1:
            dist.barrier()  # nobody races ahead of (or reads) a half-written checkpoint

    seconds = time.perf_counter() - started
    summary = {
        "epochs": config.epochs, "steps": trainer.step_count, "train_textures": int(len(textures)),
        "mask_bank": int(len(bank)), "world_size": world, "device": device.type,
        "precision": str(trainer.dtype).removeprefix("torch."), "latent": model_params.latent,
        "generator_parameters": sum(p.numel() for p in trainer.generator.parameters()),
        "vgg_pretrained": vgg.pretrained, "vgg": "imagenet" if vgg.pretrained else f"random (seed {VGG_RANDOM_SEED})",
        "ship_output": config.ship_output, "train_seconds": round(seconds, 2),
        "images_per_second": round(images_seen / seconds, 3) if images_seen else None,
    }
    if rank == 0:
        save_inpainter(out, trainer.generator, model_params.latent, config.ship_output, textures.shape[1],
                       critic=trainer.critic)
        live.summary.update(summary)
        live.end()
        summary["live_dir"] = live.dir
    return summary


def bench(latent: int, batch_size: int, steps: int, device_name: str, precision: str, size: int = 192,
          compile: bool = False) -> str:
    """Median training images/s of the full step (critic + generator + VGG) on synthetic smooth textures."""
    import platform

    config = TrainParams(batch_size=batch_size, device=device_name, precision=precision, compile=compile)
    device = resolve_device(device_name)
    trainer = Trainer(latent, config, VGG16Features(seed=VGG_RANDOM_SEED), device)
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
    return (f"train step latent {latent}, {size}x{size}, batch {batch_size}, {precision}"
            f"{', compiled' if compile else ''} on {device.type} ({name}, {torch.get_num_threads()} threads): "
            f"median {median:.3f} s/step = {batch_size / median:.2f} images/s over {steps} steps")
