"""The inpainting model as others use it: the model file, batch conversion, and batched completion.

One code path for every user of a trained model: `reconstruct`, `complete` and `evaluate` load it with
`load_inpainter` and complete textures with `inpaint` (or, to score both outputs, `prepare_batch` and
the generator's two passes). Never unpickles: torch.load(weights_only=True).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headtex.inpaint.losses import composite
from headtex.masking import hole_from_visible
from headtex.inpaint.networks import ARCHS, ColourResidual, Critic, FillBlend, Generator, build_generator
from headtex.io import UserError
from headtex.params import param

INPAINTER_FORMAT = 1
SHIP_OUTPUTS = ("coarse", "refined")


@dataclass
class ModelParams:
    """The `model:` section: the network size, shared by train and everything that builds the model."""

    arch: str = param("generator: deepfillv2 (the thesis' App. B) | symres (residual over the mirror-guided "
                      "Poisson fill) | symres2 (blend of that fill and Navier-Stokes, plus a residual) | symres3 (symres2 in the "
                      "known texels' colours, on 2x2 blocks) | blend3 (symres3's body blending the two fills per texel, no "
                      "residual) | blend3x (blend3 with the mean texture as a third candidate)", choices=ARCHS)
    latent: int = param("latent channels c: widths c, 2c, 4c (thesis: 64)", ge=1)


def to_image(texture: torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float (N,3,H,W) in [-1, 1]."""
    return texture.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [-1, 1] -> uint8 (N,H,W,3)."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def prepare_batch(textures: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 textures (N,U,U,3) and masks (N,U,U, 255 = visible) -> image (N,3,U,U) in [-1,1], hole (N,1,U,U)."""
    image = to_image(torch.from_numpy(np.ascontiguousarray(textures)).to(device))
    hole = torch.from_numpy(hole_from_visible(visible, valid))[:, None].to(device)
    return image, hole


@torch.no_grad()
def inpaint(generator: torch.nn.Module, textures: np.ndarray, visible: np.ndarray, valid: np.ndarray,
            ship_output: str = "coarse", batch_size: int = 8) -> np.ndarray:
    """Complete uint8 textures (N,U,U,3) given masks (N,U,U, 255 = visible): known texels kept bit-exact,
    holes painted by the shipped output (coarse: half the work of the refined pass)."""
    device = next(generator.parameters()).device
    completed = []
    for start in range(0, len(textures), batch_size):
        image, hole = prepare_batch(textures[start:start + batch_size], visible[start:start + batch_size], valid, device)
        output = generator.forward_coarse(image, hole) if ship_output == "coarse" else generator(image, hole)[1]
        completed.append(to_uint8(composite(output, image, hole)))
    if not completed:
        return np.zeros_like(textures)
    return restore_known(np.concatenate(completed), textures, visible, valid)


def restore_known(completed: np.ndarray, textures: np.ndarray, visible: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Known texels back bit-exact (the float round trip could move them by one level); in place."""
    known = hole_from_visible(visible, valid) == 0
    completed[known] = textures[known]
    return completed


def atomic_save(obj: object, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def load_weights_file(path: Path, what: str, hint: str) -> dict:
    """A torch file of tensors and plain values (weights_only: never unpickles code); UserError when it is not."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, pickled objects: all mean "not ours"
        raise UserError(f"{path}: corrupt or unreadable {what} ({error.__class__.__name__}); {hint}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: not a headtex {what} (found {type(loaded).__name__}); {hint}")
    return loaded


def arch_of(generator: torch.nn.Module) -> str:
    """The `model.arch` name of a generator built by build_generator."""
    if isinstance(generator, Generator):
        return "deepfillv2"
    if isinstance(generator, FillBlend):
        return "blend3x" if generator.mean_fill else "blend3"
    if isinstance(generator, ColourResidual):
        return "symres3"
    return "symres2" if generator.blend else "symres"


def save_inpainter(path: Path, generator: torch.nn.Module, latent: int, ship_output: str, uv_size: int,
                   critic: torch.nn.Module | None = None, half: bool = False) -> None:
    """The generator's weights (fp32, CPU) plus what is needed to rebuild and use it.

    The critic rides along (small next to the generator) so that `evaluate` can
    report the thesis' D and GAN losses (Table 4.1) for the shipped model. `half` stores fp16 (a shipped
    checkpoint: half the size; loading turns it back to fp32).
    """
    dtype = torch.float16 if half else torch.float32

    def weights(module: torch.nn.Module) -> dict:
        return {k: v.detach().to(dtype).cpu() for k, v in module.state_dict().items()}

    content = {"format": INPAINTER_FORMAT, "arch": arch_of(generator), "generator": weights(generator),
               "latent": int(latent), "ship_output": ship_output, "uv_size": int(uv_size)}
    if critic is not None:
        content["critic"] = weights(critic)
    atomic_save(content, path)


def read_inpainter(path: Path, hint: str = "re-run `headtex train`") -> dict:
    """The checked content of a model file: weights plus {arch, latent, ship_output, uv_size}.

    A file without `arch` predates symres and holds the thesis' deepfillv2.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing; run `headtex train` (dvc repro train) first")
    loaded = load_weights_file(path, "inpainter model", hint)
    missing = [k for k in ("format", "generator", "latent", "ship_output", "uv_size") if k not in loaded]
    if missing:
        raise UserError(f"{path}: not a headtex inpainter model (missing {', '.join(missing)}); {hint}")
    loaded.setdefault("arch", "deepfillv2")
    if loaded["arch"] not in ARCHS:
        raise UserError(f"{path}: unknown model arch {loaded['arch']!r} (this headtex knows {', '.join(ARCHS)}); {hint}")
    return loaded


def load_generator_weights(generator: torch.nn.Module, state: dict, path: Path, what: str, hint: str) -> None:
    """Load a (possibly fp16) state dict into a generator or critic; UserError naming the file when it does not fit."""
    try:
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: {what} weights do not fit ({str(error).splitlines()[0]}); {hint}") from None


def load_inpainter(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(generator in eval mode, {arch, latent, ship_output, uv_size}) from a file written by save_inpainter."""
    hint = "re-run `headtex train`"
    loaded = read_inpainter(path, hint)
    generator = build_generator(loaded["arch"], int(loaded["latent"]), int(loaded["uv_size"]))
    load_generator_weights(generator, loaded["generator"], Path(path),
                           f"{loaded['arch']} generator (latent {loaded['latent']})", hint)
    info = {"arch": loaded["arch"], "latent": int(loaded["latent"]), "ship_output": str(loaded["ship_output"]),
            "uv_size": int(loaded["uv_size"])}
    return generator.to(device).eval(), info



def load_critic(path: Path, latent: int) -> Critic | None:
    """The critic saved beside the generator (for the Table 4.1 D/GAN losses), or None when the file has none."""
    state = load_weights_file(Path(path), "inpainter model", "re-run `headtex train`").get("critic")
    if state is None:
        return None
    critic = Critic(latent)
    load_generator_weights(critic, state, Path(path), "critic", "re-run `headtex train`")
    return critic.eval()
