"""`headtex complete`: a partial UV texture (ours: the headtex layout) and its mask (255 = known) -> the texture
completed by the shipped model, through the code path `reconstruct` uses (`inpaint.complete`). One pair of
files, or two folders paired by file name. Every input is checked before any is completed; each bad input
is one line."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from headtex.complete.core import as_mask, as_rgb, image_problem, mask_problem, pair_by_name
from headtex.datasets import read_valid
from headtex.inpaint.complete import complete_textures
from headtex.inpaint.model import load_inpainter
from headtex.io import UserError, write_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def decode(path: Path) -> np.ndarray:
    """An image file as stored (RGB order for colour), or UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: not an image (cannot decode it)")
    if image.ndim == 3 and image.shape[2] >= 3:
        image = np.ascontiguousarray(image[..., [2, 1, 0, *range(3, image.shape[2])]])
    return image


def load_pair(partial_path: Path, mask_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    partial = decode(partial_path)
    problem = image_problem(partial, size)
    if problem:
        raise UserError(f"{partial_path}: {problem}")
    mask = decode(mask_path)
    problem = mask_problem(mask, partial.shape)
    if problem:
        raise UserError(f"{mask_path}: {problem}")
    return as_rgb(partial), as_mask(mask)


def jobs(partials: Path, masks: Path, out: Path) -> list[tuple[Path, Path, Path]]:
    """(partial, mask, output) per texture: one pair of files, or two folders paired by name into OUT_DIR."""
    if partials.is_dir() != masks.is_dir():
        folder, other = (partials, masks) if partials.is_dir() else (masks, partials)
        raise UserError(f"{other}: give two files or two folders ({folder} is a folder)")
    if not partials.is_dir():
        for path in (partials, masks):
            if not path.exists():
                raise UserError(f"{path}: no such file")
        if out.is_dir():
            raise UserError(f"{out}: is a folder; --out names the completed texture (PNG) for one pair")
        if out.suffix.lower() != ".png":
            raise UserError(f"{out}: the completed texture is written as PNG; name it .png")
        return [(partials, masks, out)]
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder; --out names the output folder when completing folders")

    def images(folder: Path) -> list[str]:
        return [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]

    pairs, problems = pair_by_name(images(partials), images(masks))
    if problems:
        raise UserError(f"{partials} and {masks} do not pair by name: {'; '.join(problems)}")
    if not pairs:
        raise UserError(f"{partials}: no images to complete")
    return [(partials / p, masks / m, out / f"{Path(p).stem}.png") for p, m in pairs]


def run(partials: Path, masks: Path, out: Path, model_path: Path, template_dir: Path, batch_size: int = 8) -> dict:
    todo = jobs(Path(partials), Path(masks), Path(out))
    valid_path = Path(template_dir) / "valid.png"
    if not valid_path.is_file():
        raise UserError(f"{template_dir}: no head template here (valid.png missing); build it with "
                        "`headtex template`, or pass --template DIR")
    generator, info = load_inpainter(model_path)
    size = info["uv_size"]
    try:
        valid = read_valid(valid_path, size)
    except UserError:
        raise UserError(f"{valid_path}: template is not {size}x{size} texels, the model's uv size; use the template "
                        "the model was trained with") from None
    loaded = [load_pair(partial, mask, size) for partial, mask, _ in todo]
    completed = complete_textures(generator, np.stack([p for p, _ in loaded]), np.stack([m for _, m in loaded]),
                                  valid, info["ship_output"], batch_size)
    for (_, _, target), texture in zip(todo, completed):
        write_png(target, texture)
    return {"written": [str(target) for _, _, target in todo], "ship_output": info["ship_output"], "uv_size": size}
