"""Complete core: the checks a partial texture and its mask must pass, and the pairing of two folders by name
(arrays and names in, arrays and problems out; no files)."""
from __future__ import annotations

import numpy as np


def image_problem(image: np.ndarray, size: int) -> str | None:
    """Why a decoded partial texture cannot be completed at `size` x `size` texels, or None."""
    if image.dtype != np.uint8:
        return f"{image.dtype} image; the partial texture must be 8-bit RGB"
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        return f"{'grayscale' if image.ndim == 2 else f'{image.shape[2]}-channel'} image; the partial texture must be RGB"
    if image.shape[:2] != (size, size):
        return (f"{image.shape[1]}x{image.shape[0]} texels; the model completes {size}x{size} textures in the "
                "headtex UV layout (its uv size)")
    return None


def mask_problem(mask: np.ndarray, partial_shape: tuple[int, ...]) -> str | None:
    """Why a decoded mask (255 = known, 0 = missing) does not fit its partial texture, or None."""
    if mask.dtype != np.uint8:
        return f"{mask.dtype} mask; the mask must be 8-bit, 255 = known, 0 = missing"
    if mask.ndim == 3:
        if not (mask[..., :3] == mask[..., :1]).all():
            return "colour mask; the mask must be grayscale, 255 = known, 0 = missing"
        mask = mask[..., 0]
    if mask.shape != tuple(partial_shape[:2]):
        return (f"mask is {mask.shape[1]}x{mask.shape[0]}, its partial texture is "
                f"{partial_shape[1]}x{partial_shape[0]}; they must be the same size")
    others = np.setdiff1d(np.unique(mask), [0, 255])
    if len(others):
        listed = ", ".join(str(int(v)) for v in others[:3]) + (", ..." if len(others) > 3 else "")
        return f"mask not binary: values other than 0 and 255 ({listed}); 255 = known, 0 = missing"
    return None


def as_mask(mask: np.ndarray) -> np.ndarray:
    """A mask that passed `mask_problem` as (U,U) uint8."""
    return mask[..., 0] if mask.ndim == 3 else mask


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A partial that passed `image_problem` as (U,U,3): an alpha channel is ignored (the mask says what is known)."""
    return np.ascontiguousarray(image[..., :3])


def pair_by_name(partials: list[str], masks: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair file names by stem: ([(partial, mask)] in partial order, problems: names without a partner)."""
    def stems(names: list[str]) -> dict[str, str]:
        return {name.rsplit(".", 1)[0]: name for name in sorted(names)}

    by_partial, by_mask = stems(partials), stems(masks)
    pairs = [(by_partial[s], by_mask[s]) for s in sorted(by_partial) if s in by_mask]
    problems = ([f"{by_partial[s]}: no mask of that name" for s in sorted(set(by_partial) - set(by_mask))]
                + [f"{by_mask[s]}: mask without a partial texture of that name"
                   for s in sorted(set(by_mask) - set(by_partial))])
    return pairs, problems
