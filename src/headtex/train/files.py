"""Training checkpoints (models/checkpoints/last.pt): everything to resume exactly, never unpickled."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from headtex.inpaint.model import atomic_save, load_generator_weights, load_weights_file, read_inpainter
from headtex.io import UserError

CHECKPOINT_NAME = "last.pt"


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
    atomic_save({**trainer_state, "epoch": int(epoch), "live_step": int(live_step), "fingerprint": fingerprint,
                  "rng": rng_states()}, path)
    return path


def load_checkpoint(folder: Path) -> dict | None:
    """The last checkpoint in `folder`, or None when there is none; UserError when it is corrupt."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.exists():
        return None
    hint = "delete it to start over, or run without --resume"
    loaded = load_weights_file(path, "training checkpoint", hint)
    expected = ("generator", "critic", "opt_g", "opt_d", "scaler_g", "scaler_d", "step", "epoch", "live_step",
                "fingerprint", "rng")
    missing = [k for k in expected if k not in loaded]
    if missing:
        raise UserError(f"{path}: not a headtex training checkpoint (missing {', '.join(missing)}); {hint}")
    loaded["path"] = str(path)
    return loaded


def remove_checkpoint(folder: Path) -> None:
    (Path(folder) / CHECKPOINT_NAME).unlink(missing_ok=True)


def initialise_from(path: Path, generator: torch.nn.Module, critic: torch.nn.Module, arch: str, latent: int,
                    size: int) -> None:
    """Load a model file's generator (and its critic, when it has one) into the networks; fp16 files are
    turned back to fp32. UserError naming every setting that differs (arch, latent, uv size)."""
    path = Path(path)
    hint = "set train.init_from to a model of these settings, or null to train from scratch"
    if not path.is_file():
        raise UserError(f"{path}: train.init_from names no file; {hint}")
    loaded = read_inpainter(path, hint)
    differ = [f"{name} {theirs} (params.yaml: {ours})"
              for name, theirs, ours in (("model.arch", loaded["arch"], arch), ("model.latent", int(loaded["latent"]), latent),
                                         ("uv.size", int(loaded["uv_size"]), size)) if theirs != ours]
    if differ:
        raise UserError(f"{path}: train.init_from was trained with other settings: {', '.join(differ)}; {hint}")
    load_generator_weights(generator, loaded["generator"], path, "generator", hint)
    if "critic" in loaded:
        load_generator_weights(critic, loaded["critic"], path, "critic", hint)
