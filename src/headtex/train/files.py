"""Reading and writing the shipped model (models/inpainter.pt) and training checkpoints, never unpickling."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from headtex.inpaint import Generator
from headtex.io import UserError

INPAINTER_FORMAT = 1
CHECKPOINT_NAME = "last.pt"


def _atomic_save(obj: object, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def _load(path: Path, what: str, hint: str) -> dict:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, pickled objects: all mean "not ours"
        raise UserError(f"{path}: corrupt or unreadable {what} ({error.__class__.__name__}); {hint}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: not a headtex {what} (found {type(loaded).__name__}); {hint}")
    return loaded


def save_inpainter(path: Path, generator: Generator, latent: int, ship_output: str, uv_size: int,
                   critic: torch.nn.Module | None = None) -> None:
    """The generator's weights (fp32, CPU) plus what is needed to rebuild and use it.

    The critic rides along (small next to the generator) so that `evaluate` can
    report the thesis' D and GAN losses (Table 4.1) for the shipped model.
    """
    def fp32(module: torch.nn.Module) -> dict:
        return {k: v.detach().float().cpu() for k, v in module.state_dict().items()}

    content = {"format": INPAINTER_FORMAT, "generator": fp32(generator), "latent": int(latent),
               "ship_output": ship_output, "uv_size": int(uv_size)}
    if critic is not None:
        content["critic"] = fp32(critic)
    _atomic_save(content, path)


def load_inpainter(path: Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """(generator in eval mode, {latent, ship_output, uv_size}) from a file written by save_inpainter."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing; run `headtex train` (dvc repro train) first")
    hint = "re-run `headtex train`"
    loaded = _load(path, "inpainter model", hint)
    missing = [k for k in ("format", "generator", "latent", "ship_output", "uv_size") if k not in loaded]
    if missing:
        raise UserError(f"{path}: not a headtex inpainter model (missing {', '.join(missing)}); {hint}")
    generator = Generator(int(loaded["latent"]))
    try:
        generator.load_state_dict(loaded["generator"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: generator weights do not match latent {loaded['latent']} ({error}); {hint}") from None
    info = {"latent": int(loaded["latent"]), "ship_output": str(loaded["ship_output"]),
            "uv_size": int(loaded["uv_size"])}
    return generator.to(device).eval(), info


def rng_states() -> dict:
    """Global torch (CPU and CUDA), numpy and python RNG states as tensors and plain values (weights_only-safe).

    The training itself draws nothing from them (it seeds its own generators), but code added later
    might, and a resumed run must then continue the same streams.
    """
    bit_generator, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["bit_generator"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, trainer_state: dict, epoch: int, live_step: int, fingerprint: dict) -> Path:
    """Everything needed to continue after `epoch` completed epochs; replaces the previous checkpoint atomically."""
    path = Path(folder) / CHECKPOINT_NAME
    _atomic_save({**trainer_state, "epoch": int(epoch), "live_step": int(live_step), "fingerprint": fingerprint,
                  "rng": rng_states()}, path)
    return path


def load_checkpoint(folder: Path) -> dict | None:
    """The last checkpoint in `folder`, or None when there is none; UserError when it is corrupt."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.exists():
        return None
    hint = "delete it to start over, or run without --resume"
    loaded = _load(path, "training checkpoint", hint)
    expected = ("generator", "critic", "opt_g", "opt_d", "scaler_g", "scaler_d", "step", "epoch", "live_step",
                "fingerprint", "rng")
    missing = [k for k in expected if k not in loaded]
    if missing:
        raise UserError(f"{path}: not a headtex training checkpoint (missing {', '.join(missing)}); {hint}")
    loaded["path"] = str(path)
    return loaded


def remove_checkpoint(folder: Path) -> None:
    (Path(folder) / CHECKPOINT_NAME).unlink(missing_ok=True)
