"""Training the inpainting GAN (thesis 3.4, 4.1, App. B): data, one training step, learning rates, sample grid.

Pure: arrays and modules in, arrays and numbers out; no files, no printing, no global RNG state
(network initialisation runs under `torch.random.fork_rng`, every data draw comes from
`np.random.default_rng([seed, identity, purpose, epoch])`), so a resumed run repeats an
uninterrupted one exactly and nothing depends on the number of workers or processes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from headtex.datasets import ShardRows
from headtex.inpaint import Critic, VGG16Features, build_generator, composite, critic_loss, generator_loss, init_weights
from headtex.inpaint.losses import L1_WEIGHTINGS
from headtex.masking import draw_training_mask, hole_from_visible, is_visible
from headtex.inpaint.model import SHIP_OUTPUTS, to_image, to_uint8
from headtex.io import UserError
from headtex.params import param

PURPOSE_TRAIN_MASK = 61  # rng purpose: mask and flip of one training texture in one epoch
PURPOSE_SAMPLE_MASK = 62  # rng purpose: the fixed masks of the per-epoch sample grid
PURPOSE_PARTIAL_MASK = 63  # rng purpose: mask and flip of one partial texture (a PAF) in one epoch
LOSS_NAMES = ("first_mask_l1", "second_mask_l1", "first_mask_l1_missing", "second_mask_l1_missing",
              "perceptual", "gan", "d_loss", "g_total")
# Keys that may change between an interrupted run and its resumption without changing what it computes
# (epochs only extends the schedule; the rest are how, not what).
RESUMABLE_CHANGES = ("epochs", "device", "precision", "compile", "num_workers", "ship_output", "log_every")


@dataclass
class TrainParams:
    """The `train:` section (thesis 3.4, 4.1, App. B), plus `p_real` and `max_strokes` shared from `masks:`."""

    epochs: int = param("passes over the training textures (thesis: 20)", ge=1)
    batch_size: int = param("textures per step and process (global batch = batch_size x processes)", ge=1)
    lr_g: float = param("generator Adam learning rate (thesis: 1e-4)", gt=0)
    lr_d: float = param("critic Adam learning rate (thesis: 4e-4)", gt=0)
    b1: float = param("Adam beta1", ge=0, le=1)
    b2: float = param("Adam beta2", ge=0, le=1)
    weight_decay: float = param("Adam weight decay", ge=0)
    lr_decrease_epoch: int = param("both learning rates x lr_decrease_factor every this many epochs", ge=1)
    lr_decrease_factor: float = param("learning-rate step factor", gt=0, le=1)
    lambda_l1: float = param("weight of first + second mask L1", ge=0)
    l1_weighting: str = param("pixels (the thesis: mean over every pixel, a sample weighs by its hole's area) | hole "
                              "(each sample's L1 over its own hole: small holes count alike)", choices=L1_WEIGHTINGS)
    lambda_perceptual: float = param("weight of the VGG-16 relu4_3 perceptual L1", ge=0)
    lambda_gan: float = param("weight of the generator's WGAN loss", ge=0)
    init_gain: float | None = param("Xavier-normal gain of every convolution; null = PyTorch's default init", gt=0)
    seed: int = param("network initialisation, data order, training masks and flips")
    vgg_weights: str | None = param("torchvision's vgg16 ImageNet file; null = fixed-seed random VGG")
    ship_output: str = param("output shipped in models/inpainter.pt", choices=SHIP_OUTPUTS)
    flips: bool = param("random horizontal flips (the UV layout is symmetric about u = 0.5)")
    device: str = param("auto (CUDA if present) | cpu | cuda", choices=("auto", "cpu", "cuda"))
    precision: str = param("auto (bf16 on CUDA, and on CPU with oneDNN bf16 when not deterministic; else fp32) | "
                           "fp32 | bf16 | fp16",
                           choices=("auto", "fp32", "bf16", "fp16"))
    compile: bool = param("torch.compile the generator and critic")
    deterministic: bool = param("CPU: bitwise-repeatable training (PyTorch's own convolutions, not oneDNN's, whose "
                                "backward passes vary in the last bits run to run; ~2x slower); false = faster")
    num_workers: int = param("DataLoader worker processes (0 = load in the training process)", ge=0)
    log_every: int = param("steps per logged loss value (losses are reduced on the device in between)", ge=1)
    init_from: str | None = param("model file (models/pretrained/<name>.pt, fp16 allowed) the generator and critic "
                                  "start from; null = from scratch (train.seed's initialisation)")
    p_real: float = param("chance that a training mask comes from the real bank", shared="masks.p_real", ge=0, le=1)
    max_strokes: int = param("free-form masks: 0..max_strokes strokes", shared="masks.max_strokes", ge=1)
    partials: bool = param("also train on every training identity's partial textures (data/pafs): holes hide part of "
                           "what a view shows and the L1 is taken on the hidden seen texels, the real-face task")
    p_blob: float = param("chance that a training mask is a bank mask with blobs hiding part of what it shows (a "
                          "real photo's partial with holes in the face); masks.p_real + p_blob at most 1", ge=0, le=1)
    warp_texels: float = param("std of a smooth random displacement of each training texture (texels; 0 = none): a real "
                               "photo's fit places the face off the template's layout, the generated people's does not",
                               ge=0)

    def __post_init__(self) -> None:
        if self.p_real + self.p_blob > 1:
            raise ValueError(f"masks.p_real + train.p_blob is {self.p_real + self.p_blob:g}; at most 1 (the rest are "
                             "free-form)")

    def fingerprint(self) -> dict:
        """The settings that determine the training trajectory (compared before resuming)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE_CHANGES}


# ---- data ----

def training_example(texture: np.ndarray, identity: int, epoch: int, bank: np.ndarray, valid: np.ndarray,
                     config: TrainParams) -> tuple[np.ndarray, np.ndarray]:
    """(texture, hole) for one identity in one epoch: a seeded mask and, with flips, a seeded mirror."""
    rng = np.random.default_rng([config.seed, int(identity), PURPOSE_TRAIN_MASK, epoch])
    visible = draw_training_mask(rng, bank, config.p_real, texture.shape[0], config.max_strokes, config.p_blob, valid)
    if config.flips and rng.random() < 0.5:
        # mirror left/right of the head; texels off the mirrored head stay known, like off the head
        texture = texture[:, ::-1]
        valid = valid & valid[:, ::-1]
    if config.warp_texels:
        texture = smooth_warp(texture, rng, config.warp_texels)
    return np.ascontiguousarray(texture), hole_from_visible(visible, valid)


WARP_GRID = 4  # the displacement is drawn on a 4x4 grid and interpolated: features move, not single texels


def smooth_warp(texture: np.ndarray, rng: np.random.Generator, std_texels: float) -> np.ndarray:
    """The texture resampled through a smooth random displacement field (per axis, std `std_texels`)."""
    size = texture.shape[0]
    coarse = rng.normal(0.0, std_texels, (2, WARP_GRID, WARP_GRID)).astype(np.float32)
    shift_x, shift_y = (cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    return cv2.remap(np.ascontiguousarray(texture), grid_x + shift_x, grid_y + shift_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT101)


def sample_examples(textures: np.ndarray | ShardRows, identities: np.ndarray, bank: np.ndarray, valid: np.ndarray,
                    config: TrainParams, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (textures, holes) shown in every epoch's sample grid: the lowest identities, fixed masks."""
    order = np.argsort(identities, kind="stable")[:count]
    holes = []
    for index in order:
        rng = np.random.default_rng([config.seed, int(identities[index]), PURPOSE_SAMPLE_MASK])
        visible = draw_training_mask(rng, bank, config.p_real, textures.shape[1], config.max_strokes, config.p_blob,
                                     valid)
        holes.append(hole_from_visible(visible, valid))
    return textures[order], np.stack(holes)


class TextureDataset(Dataset):
    """Training textures with a fresh, seeded mask per identity and epoch (call set_epoch).

    `textures` is anything indexable by row: an in-memory array or `datasets.ShardRows`, which reads each
    row from its shard when asked (memory O(batch)).
    """

    def __init__(self, textures: np.ndarray | ShardRows, identities: np.ndarray, bank: np.ndarray, valid: np.ndarray,
                 config: TrainParams):
        self.textures, self.identities, self.bank, self.valid, self.config = textures, identities, bank, valid, config
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.textures)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(texture, hole, scored): a complete texture is scored everywhere."""
        texture, hole = training_example(self.textures[index], self.identities[index], self.epoch,
                                         self.bank, self.valid, self.config)
        return torch.from_numpy(texture), torch.from_numpy(hole), torch.ones_like(torch.from_numpy(hole))


def partial_example(paf: np.ndarray, visible: np.ndarray, row: int, epoch: int, bank: np.ndarray, valid: np.ndarray,
                    config: TrainParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(texture, hole, scored) for one partial texture in one epoch: a seeded training mask hides part of what the
    view shows; the hole is every texel on the head not left known, the L1 is scored on the seen texels only (the
    only ones whose truth is known)."""
    rng = np.random.default_rng([config.seed, int(row), PURPOSE_PARTIAL_MASK, epoch])
    seen = is_visible(visible) & valid
    mask = draw_training_mask(rng, bank, config.p_real, paf.shape[0], config.max_strokes, config.p_blob, seen)
    if config.flips and rng.random() < 0.5:
        paf, seen, mask, valid = paf[:, ::-1], seen[:, ::-1], mask[:, ::-1], valid[:, ::-1] & valid
    given = seen & is_visible(mask)
    return (np.ascontiguousarray(paf), hole_from_visible(np.where(given, 255, 0).astype(np.uint8), valid),
            np.ascontiguousarray(seen & valid).astype(np.float32))


class PartialDataset(Dataset):
    """Partial textures (data/pafs rows, read on demand) with a fresh, seeded hole per row and epoch (set_epoch)."""

    def __init__(self, pafs: ShardRows, visible: ShardRows, rows: np.ndarray, bank: np.ndarray, valid: np.ndarray,
                 config: TrainParams):
        self.pafs, self.visible, self.rows, self.bank, self.valid, self.config = pafs, visible, rows, bank, valid, config
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = int(self.rows[index])
        texture, hole, scored = partial_example(self.pafs[row], self.visible[row], row, self.epoch, self.bank,
                                                self.valid, self.config)
        return torch.from_numpy(texture), torch.from_numpy(hole), torch.from_numpy(scored)


# ---- devices ----

def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml [train]: device is cuda but no CUDA device is available (use auto or cpu)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device, deterministic: bool = True) -> torch.dtype:
    """Autocast dtype: auto = bf16 on CUDA (fp16 where bf16 is unsupported); on CPU bf16 where oneDNN runs it
    (train.deterministic false, a CPU with bf16 instructions: 1.8x the fp32 step, docs/RESULTS.md), else fp32."""
    if name == "auto":
        if device.type != "cuda":
            fast_bf16 = not deterministic and torch.backends.mkldnn.is_available() and \
                torch.ops.mkldnn._is_mkldnn_bf16_supported()
            return torch.bfloat16 if fast_bf16 else torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# ---- training ----

def learning_rate_factor(epoch: int, config: TrainParams) -> float:
    """Step schedule of the DeepFillv2 port: x lr_decrease_factor every lr_decrease_epoch epochs (0-based epoch)."""
    return config.lr_decrease_factor ** (epoch // config.lr_decrease_epoch)


def build_networks(latent: int, config: TrainParams, arch: str = "deepfillv2",
                   size: int = 192) -> tuple[torch.nn.Module, Critic]:
    """Generator (`model.arch`, for size x size textures) and critic initialised from train.seed without
    touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator, critic = build_generator(arch, latent, size), Critic(latent)
        if config.init_gain is not None:
            init_weights(generator, config.init_gain)
            init_weights(critic, config.init_gain)
    return generator, critic


class Trainer:
    """Generator, critic, frozen VGG and both Adam optimisers; `train_step` = one critic + one generator update."""

    def __init__(self, latent: int, config: TrainParams, vgg: VGG16Features, device: torch.device,
                 distributed: bool = False, arch: str = "deepfillv2", size: int = 192,
                 channels_last: bool | None = None):
        self.config, self.device, self.latent, self.arch = config, device, latent, arch
        self.dtype = resolve_precision(config.precision, device, config.deterministic)
        if device.type == "cpu":
            # oneDNN's convolutions give last-bit differences between identical runs (measured on the tiny
            # pipeline); without them a rerun on identical inputs rewrites identical files (a DVC output).
            torch.backends.mkldnn.enabled = not config.deterministic
        # channels_last: CUDA's fast layout; on CPU only when asked (`headtex bench train --channels-last`)
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generator, self.critic = (net.to(device, memory_format=memory_format)
                                       for net in build_networks(latent, config, arch, size))
        self.vgg = vgg.to(device, memory_format=memory_format)
        betas = (config.b1, config.b2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), config.lr_g, betas, weight_decay=config.weight_decay)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), config.lr_d, betas, weight_decay=config.weight_decay)
        # loss scaling is needed for fp16 only; one scaler per optimiser because the two backward passes are separate
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.step_count = 0
        self.distributed = distributed
        generator_run, critic_run = self.generator, self.critic
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            generator_run = DistributedDataParallel(self.generator, device_ids=ids)
            critic_run = DistributedDataParallel(self.critic, device_ids=ids)
        if config.compile:
            generator_run, critic_run = torch.compile(generator_run), torch.compile(critic_run)
        self.generator_run, self.critic_run = generator_run, critic_run
        # the generator's GAN loss goes through the plain critic (frozen): no DDP gradient sync for it
        self.critic_frozen = torch.compile(self.critic) if config.compile else self.critic

    def set_prior(self, mean_texture: np.ndarray, valid: np.ndarray) -> None:
        """Give a generator that takes them (symres) the mean training texture and the valid region."""
        if hasattr(self.generator, "set_prior"):
            self.generator.set_prior(mean_texture, valid)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def set_epoch(self, epoch: int) -> None:
        factor = learning_rate_factor(epoch, self.config)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.lr_g * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.lr_d * factor

    def learning_rates(self) -> tuple[float, float]:
        return self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]

    def prepare(self, texture: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N,H,W,3) and hole (N,H,W) on any device -> image (N,3,H,W) in [-1,1], hole (N,1,H,W)."""
        image = to_image(texture.to(self.device, non_blocking=True))
        hole = hole.to(self.device, non_blocking=True)[:, None].float()
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
            hole = hole.contiguous(memory_format=torch.channels_last)
        return image, hole

    def train_step(self, texture: torch.Tensor, hole: torch.Tensor, scored: torch.Tensor | None = None
                   ) -> dict[str, float]:
        """One WGAN critic update then one generator update (as in the DeepFillv2 port); returns the losses.

        `scored` (N,H,W; 1 = the truth is known): the L1 is taken on the hole's scored texels only (a partial
        texture's unseen texels have no truth); None = everywhere.

        Losses are averaged over processes; a NaN/Inf loss raises UserError naming the step, before any update
        with it is applied.
        """
        image, hole = self.prepare(texture, hole)
        scored_hole = hole if scored is None else hole * scored.to(hole.device)[:, None].to(hole.dtype)
        config = self.config
        with self.autocast():
            coarse, refined = self.generator_run(image, hole)
        coarse, refined = coarse.float(), refined.float()

        d_value = 0.0
        if config.lambda_gan > 0:  # without a GAN term the critic would train for nobody: skipped (and d_loss 0)
            with self.autocast():
                d_loss = critic_loss(self.critic_run, image, composite(refined, image, hole), hole)
            (d_value,) = self._synced_finite({"d_loss": d_loss.detach().float()})
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_loss).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()

        self.critic.requires_grad_(False)
        try:
            with self.autocast():
                total, parts = generator_loss(coarse, refined, image, scored_hole, self.critic_frozen, self.vgg,
                                              config.lambda_l1, config.lambda_perceptual, config.lambda_gan,
                                              config.l1_weighting)
        finally:
            self.critic.requires_grad_(True)
        values = {**parts, "g_total": total.detach().float()}
        averaged = self._synced_finite(values)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(total).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.step_count += 1
        return {**dict(zip(values, averaged)), "d_loss": d_value}

    def _synced_finite(self, values: dict[str, torch.Tensor]) -> list[float]:
        """Mean over processes (one all-reduce); raise on NaN/Inf so that every process stops at the same step."""
        stacked = torch.stack([v.reshape(()) for v in values.values()])
        if self.distributed:
            dist.all_reduce(stacked)
            stacked /= dist.get_world_size()
        result = stacked.tolist()
        bad = [f"{name}={value}" for name, value in zip(values, result) if not math.isfinite(value)]
        if bad:
            raise UserError(f"training diverged at step {self.step_count + 1}: non-finite loss ({', '.join(bad)}), "
                            "stopped before applying it; with bf16/fp16 try train.precision fp32 (then --resume "
                            "continues from the last checkpoint), else lower train.lr_g / train.lr_d")
        return result

    @torch.no_grad()
    def predict(self, texture: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, coarse, refined) in [-1,1] for uint8 textures and holes, without gradients."""
        image, hole = self.prepare(texture, hole)
        with self.autocast():
            coarse, refined = self.generator(image, hole)
        return image, coarse.float(), refined.float()

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.step_count = int(state["step"])


def sample_grid(image: torch.Tensor, hole: torch.Tensor, coarse: torch.Tensor, refined: torch.Tensor) -> np.ndarray:
    """One row per sample: GT | masked input (holes white, as the generator sees them) | coarse | refined."""
    hole = hole.to(image.device)[:, None].float()
    masked = image * (1 - hole) + hole
    columns = [to_uint8(x) for x in (image, masked, composite(coarse, image, hole), composite(refined, image, hole))]
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns)], axis=0)


