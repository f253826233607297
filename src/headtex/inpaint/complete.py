"""Completing partial textures with the shipped model, the one way `reconstruct` and `complete` both do it.

The model paints the holes (known texels kept bit-exact, `model.inpaint`); texels off the head are then
filled from their neighbours so that bilinear lookups at the head's UV border (MeshLab, renders) never
blend in black.
"""
from __future__ import annotations

import numpy as np
import torch

from headtex.geometry.template import fill_invalid
from headtex.inpaint.model import inpaint
from headtex.inpaint.networks import Generator


def complete_textures(generator: Generator, partials: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                      ship_output: str, batch_size: int = 8) -> np.ndarray:
    """uint8 partial textures (N,U,U,3) + masks (N,U,U, 255 = known) -> completed textures (N,U,U,3)."""
    with torch.inference_mode():
        completed = inpaint(generator, partials, visible, valid, ship_output, batch_size=batch_size)
    return np.stack([fill_invalid(texture, valid) for texture in completed]) if len(completed) else completed


def complete_texture(generator: Generator, paf: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                     ship_output: str) -> np.ndarray:
    """The model's completion of one partial texture (U,U,3) given its mask (U,U, 255 = known)."""
    return complete_textures(generator, paf[None], visible[None], valid, ship_output, batch_size=1)[0]
