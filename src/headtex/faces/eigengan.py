"""The `eigengan` faces source: EigenGAN (He, Kan and Shan 2021), the generator the thesis drew its people from.

The network is written here in plain torch to load, unchanged, the checkpoints of the public PyTorch port
(github.com/bryandlee/eigengan-pytorch, `train.py` saves {"step", "args", "g", "d", "g_ema", ...}): its
module names, shapes and forward pass. A checkpoint's architecture (size, n_basis, noise_dim, channels) is
read from its `args` where present, else from the tensor shapes.

Generator: e (noise_dim) -> fc -> 4x4 features; block i (4·2^i px) adds a learned linear subspace
phi_i = (L_i * z_i) @ U_i + mu_i (z_i: n_basis coefficients) to its input through two transposed convs,
and doubles the resolution; to_rgb = leaky ReLU, 7x7 conv, tanh. One identity = one (e, z); its views
set one coordinate z[layer, dim] (the pose dimension) along a range and keep all others, so lighting,
expression and background stay the same by construction.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from headtex.identity import SAME_PERSON, face_descriptor
from headtex.io import UserError

LATENT = 0  # the one random stream of this source: np.random.default_rng([seed, identity, LATENT])
# Beside tensors, the port's checkpoints pickle its argparse.Namespace of training args and, trained with --fid,
# a numpy float (the FID): the classes weights_only loading is allowed to rebuild (numpy 1 and 2 pickle the
# scalar under different module names).
_SCALAR = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
SAFE_GLOBALS = [argparse.Namespace, np.dtype, type(np.dtype(np.float64)),
                (_SCALAR, "numpy.core.multiarray.scalar"), (_SCALAR, "numpy._core.multiarray.scalar")]
SLOPE = 0.2  # the port's leaky ReLU slope
WEIGHTS_HINT = "download the port's FFHQ checkpoint (README: The EigenGAN source)"


@dataclass(frozen=True)
class Architecture:
    """The port's Generator(size, n_basis, noise_dim, base_channels, max_channels)."""

    size: int
    n_basis: int
    noise_dim: int
    base_channels: int
    max_channels: int

    @property
    def blocks(self) -> int:
        return int(math.log2(self.size)) - 2

    def channels(self, block: int) -> int:
        """Feature channels entering block `block` (block == blocks: what to_rgb reads)."""
        return min(self.max_channels, self.base_channels * 2 ** (self.blocks - block))


def checkpoint_layout(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every key of the port's Generator.state_dict() with its shape, in the port's order."""
    first = arch.channels(0)
    layout = {"fc.weight": (16 * first, arch.noise_dim), "fc.bias": (16 * first,)}
    for i in range(arch.blocks):
        cin, cout, side = arch.channels(i), arch.channels(i + 1), 4 * 2 ** i
        block = f"blocks.{i}."
        layout.update({
            block + "projection.U": (arch.n_basis, side * side * cin),
            block + "projection.L": (arch.n_basis,),
            block + "projection.mu": (side * side * cin,),
            # Transposed convs keep their weights as (in, out, k, k); a ConvLayer is a Sequential whose conv
            # is entry 0, or entry 1 after the leaky ReLU where it is pre-activated (the feature convs).
            block + "subspace_conv1.0.weight": (cin, cin, 1, 1),
            block + "subspace_conv1.0.bias": (cin,),
            block + "subspace_conv2.0.weight": (cin, cout, 3, 3),
            block + "subspace_conv2.0.bias": (cout,),
            block + "feature_conv1.1.weight": (cin, cout, 3, 3),
            block + "feature_conv1.1.bias": (cout,),
            block + "feature_conv2.1.weight": (cout, cout, 3, 3),
            block + "feature_conv2.1.bias": (cout,),
        })
    layout["to_rgb.0.1.weight"] = (3, arch.base_channels, 7, 7)
    layout["to_rgb.0.1.bias"] = (3,)
    return layout


class _Subspace(nn.Module):
    """phi = (L * z) @ U + mu: z's coordinates along an orthonormal basis U, scaled by L."""

    def __init__(self, dim: int, n_basis: int) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.zeros(n_basis, dim))
        self.L = nn.Parameter(torch.zeros(n_basis))
        self.mu = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.L * z) @ self.U + self.mu


def _up(cin: int, cout: int, kernel: int, stride: int, pre_activate: bool) -> nn.Sequential:
    """A transposed conv that multiplies the side by `stride` (output_padding = stride - 1, as the port)."""
    conv = nn.ConvTranspose2d(cin, cout, kernel, stride, padding=kernel // 2, output_padding=stride - 1)
    return nn.Sequential(nn.LeakyReLU(SLOPE), conv) if pre_activate else nn.Sequential(conv)


class _Block(nn.Module):
    def __init__(self, side: int, cin: int, cout: int, n_basis: int) -> None:
        super().__init__()
        self.projection = _Subspace(side * side * cin, n_basis)
        self.subspace_conv1 = _up(cin, cin, 1, 1, pre_activate=False)
        self.subspace_conv2 = _up(cin, cout, 3, 2, pre_activate=False)
        self.feature_conv1 = _up(cin, cout, 3, 2, pre_activate=True)
        self.feature_conv2 = _up(cout, cout, 3, 1, pre_activate=True)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        phi = self.projection(z).view(h.shape)
        h = self.feature_conv1(h + self.subspace_conv1(phi))
        return self.feature_conv2(h + self.subspace_conv2(phi))


class Generator(nn.Module):
    """EigenGAN's generator, state-dict compatible with the port: forward(e (B, noise_dim), z (B, blocks, n_basis))
    -> images (B, 3, size, size) in [-1, 1]."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.fc = nn.Linear(arch.noise_dim, 16 * arch.channels(0))
        self.blocks = nn.ModuleList(_Block(4 * 2 ** i, arch.channels(i), arch.channels(i + 1), arch.n_basis)
                                    for i in range(arch.blocks))
        self.to_rgb = nn.Sequential(
            nn.Sequential(nn.LeakyReLU(SLOPE), nn.Conv2d(arch.base_channels, 3, 7, padding=3)), nn.Tanh())

    def forward(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(e).view(len(e), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(z[:, i], h)
        return self.to_rgb(h)


# --- loading ------------------------------------------------------------------------------------------------

def _architecture(state: dict, args: object, path: Path) -> Architecture:
    """From the checkpoint's training args where it has them, else from the shapes of its tensors."""
    names = ("size", "n_basis", "noise_dim", "base_channels", "max_channels")
    if args is not None and all(isinstance(getattr(args, n, None), int) for n in names):
        arch = Architecture(*(getattr(args, n) for n in names))
        if arch.size < 8 or arch.size & (arch.size - 1):
            raise UserError(f"{path}: args.size {arch.size} is not a power of 2 >= 8")
        return arch
    for key in ("fc.weight", "blocks.0.projection.U", "to_rgb.0.1.weight"):
        if key not in state or not hasattr(state[key], "shape") or len(state[key].shape) < 2:
            raise UserError(f"{path}: not an EigenGAN generator: key {key} missing or not a matrix")
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    fc_out, noise_dim = state["fc.weight"].shape
    return Architecture(size=4 * 2 ** blocks, n_basis=int(state["blocks.0.projection.U"].shape[0]),
                        noise_dim=int(noise_dim), base_channels=int(state["to_rgb.0.1.weight"].shape[1]),
                        max_channels=int(fc_out) // 16)


def check_state(state: dict, layout: dict[str, tuple[int, ...]], path: Path) -> None:
    """One UserError naming the first key that is missing, unexpected or of the wrong shape."""
    for key, shape in layout.items():
        if key not in state:
            raise UserError(f"{path}: EigenGAN checkpoint lacks key {key} (expected shape {list(shape)})")
        found = tuple(getattr(state[key], "shape", ()))
        if found != shape:
            raise UserError(f"{path}: EigenGAN checkpoint key {key} has shape {list(found)}, expected {list(shape)}")
    unexpected = [key for key in state if key not in layout]
    if unexpected:
        raise UserError(f"{path}: EigenGAN checkpoint has unexpected key {unexpected[0]}")


def load_generator(path: Path) -> Generator:
    """The generator of a port checkpoint (its `g_ema`, else `g`) or of a bare state dict, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: faces.eigengan_weights not found; {WEIGHTS_HINT}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many kinds for a bad file)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UserError(f"{path}: not a loadable PyTorch checkpoint ({error.__class__.__name__}: {reason})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    args = checkpoint.get("args")
    state = checkpoint.get("g_ema", checkpoint.get("g", checkpoint))
    if not isinstance(state, dict):
        raise UserError(f"{path}: the checkpoint's generator is not a state dict")
    arch = _architecture(state, args, path)
    check_state(state, checkpoint_layout(arch), path)
    generator = Generator(arch)
    generator.load_state_dict({key: value.float() for key, value in state.items()})
    return generator.eval()


# --- identities and their views ---------------------------------------------------------------------------

def pose_dimension(generator: Generator, pose: list[int | None]) -> tuple[int, int]:
    """(layer, dim) of the traversal; dim None = the dimension of that layer with the largest |L|."""
    layer, dim = pose
    blocks, n_basis = generator.arch.blocks, generator.arch.n_basis
    if layer >= blocks:
        raise UserError(f"params.yaml: faces.eigengan_pose layer {layer}, but the generator has layers 0-{blocks - 1}")
    if dim is None:
        return layer, int(torch.argmax(generator.blocks[layer].projection.L.detach().abs()))
    if dim >= n_basis:
        raise UserError(f"params.yaml: faces.eigengan_pose dim {dim}, but each layer has dims 0-{n_basis - 1}")
    return layer, dim


def traversal_positions(yaw_degrees: list[float], value_range: list[float]) -> np.ndarray:
    """The pose coordinate of each view: the yaws mapped linearly onto the range (first yaw, last yaw of the
    sorted list -> range[0], range[1]); one view sits at the range's middle."""
    yaws = np.asarray(yaw_degrees, np.float64)
    low, high = yaws.min(), yaws.max()
    share = (yaws - low) / (high - low) if high > low else np.full(len(yaws), 0.5)
    return (value_range[0] + share * (value_range[1] - value_range[0])).astype(np.float32)


def identity_latents(arch: Architecture, seed: int, identity: int, truncation: float) -> tuple[np.ndarray, np.ndarray]:
    """(e, z) of one identity, drawn once from its own stream; truncation scales both towards 0 (as the port)."""
    rng = np.random.default_rng([seed, identity, LATENT])
    e = rng.standard_normal(arch.noise_dim) * truncation
    z = rng.standard_normal((arch.blocks, arch.n_basis)) * truncation
    return e.astype(np.float32), z.astype(np.float32)


@torch.no_grad()
def generate_views(generator: Generator, latents: tuple[np.ndarray, np.ndarray], pose: tuple[int, int],
                   positions: np.ndarray, image_size: int) -> np.ndarray:
    """The identity's views (V, S, S, 3 uint8): the latent with z[pose] set to each position."""
    e, z = latents
    views = len(positions)
    zs = np.repeat(z[None], views, axis=0)
    zs[:, pose[0], pose[1]] = positions
    out = generator(torch.from_numpy(np.repeat(e[None], views, axis=0)), torch.from_numpy(zs))
    images = ((out.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    if images.shape[1] != image_size:
        shrink = images.shape[1] > image_size
        images = np.stack([cv2.resize(image, (image_size, image_size),
                                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC) for image in images])
    return images


def centre_view(positions: np.ndarray, value_range: list[float]) -> int:
    """The view nearest the middle of the traversal: the reference the other views must stay the same person as."""
    return int(np.argmin(np.abs(positions - 0.5 * (value_range[0] + value_range[1]))))


@dataclass
class Checked:
    """dlib's verdict on one identity's views."""

    kept: bool
    reason: str  # "" when kept, else why the identity was dropped
    distances: list[float]  # descriptor distance of each checked view to the centre view


def check_identity(images: np.ndarray, centre: int) -> Checked:
    """Keep an identity when dlib finds a face in every view and each view's descriptor lies within SAME_PERSON
    of the centre view's; stops at the first failing view."""
    reference = face_descriptor(images[centre])
    if reference is None:
        return Checked(False, f"view {centre} (centre): no face found", [])
    distances = []
    for view in (v for v in range(len(images)) if v != centre):
        descriptor = face_descriptor(images[view])
        if descriptor is None:
            return Checked(False, f"view {view}: no face found", distances)
        distances.append(round(float(np.linalg.norm(descriptor - reference)), 4))
        if distances[-1] >= SAME_PERSON:
            return Checked(False, f"view {view}: another person (distance {distances[-1]:.2f} >= {SAME_PERSON})",
                           distances)
    return Checked(True, "", distances)
