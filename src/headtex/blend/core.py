"""Blend core: the partial UV textures of one identity in, one complete texture out (arrays only, no I/O).

Two methods, both computed every run so that their fidelity can be compared:
  thirds      thesis 3.3 / Appendix A: the left UV third from one view, the centre third from a second,
              the right third from a third, merged by three rounds of Poisson blending (cv2.seamlessClone).
  visibility  every view weighted per texel by visibility × cos(view angle)^p × a feather towards the
              edge of what it sees, merged by multi-band (Laplacian pyramid) blending.
Texels of the UV valid region that the used views never see are filled (`fill_unseen`) and counted;
the quality gate rejects textures with enclosed holes, strong seams or outlier colour statistics.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from headtex.params import param

METHODS = ("thirds", "visibility")
REJECTION_REASONS = ("missing_views", "unseen", "holes", "seams", "colour")


@dataclass
class BlendParams:
    """The `blend:` section of params.yaml (mask_identities is the shared `masks.identities`, uv_size `uv.size`)."""

    method: str = param("which texture is written (both are measured): thirds | visibility", choices=METHODS)
    views: list[int] = param("thirds: the three 0-based view indices (-35, 0, +35 degrees)", ge=0)
    test_identities: int = param("identities held out for test (the rest of the non-mask-bank identities train)", ge=1)
    seed: int = param("the train/test split")
    cosine_power: float = param("visibility: weight = cos(view angle)^p ...", ge=0)
    feather_texels: float = param("... x min(1, texels to the edge of what the view sees / feather)", gt=0)
    pyramid_levels: int = param("multi-band blending levels (1 = plain weighted average)", ge=1)
    inpaint_radius: int = param("cv2.inpaint (Telea) radius for texels no used view sees", ge=1)
    max_unseen_fraction: float = param("gate: share of the valid UV region no used view sees", ge=0, le=1)
    max_hole_fraction: float = param("gate: share of the valid region in unseen holes enclosed by seen texels",
                                     ge=0, le=1)
    max_seam_ratio: float = param("gate: texture step across source boundaries / the sources' own step there", gt=0)
    max_colour_z: float = param("gate: robust z-score of per-channel colour mean and std over the dataset", gt=0)
    shard_size: int = param("textures per shard", ge=1)
    preview_identities: int = param("test identities shown in data/textures/preview/", ge=0)
    mask_identities: int = param("identities the mask bank holds out", shared="masks.identities")
    uv_size: int = param("texture side in texels", shared="uv.size")

    def __post_init__(self) -> None:
        if len(self.views) != 3 or len(set(self.views)) != 3:
            raise ValueError(f"views must be three distinct view indices, not {self.views}")


@dataclass
class Blended:
    """One method's complete texture of one identity and what the quality gate needs of it."""

    texture: np.ndarray  # U,U,3 uint8, complete
    seen: np.ndarray  # U,U bool: valid texels its sources saw (the others were filled)
    seams: float  # seam_ratio across the boundaries between its sources


# ---------------------------------------------------------------- shared pieces

def third_bounds(width: int) -> tuple[int, int]:
    """Column where the centre third starts and where the right third starts (np.array_split, as App. A)."""
    sizes = [len(part) for part in np.array_split(np.arange(width), 3)]
    return sizes[0], sizes[0] + sizes[1]


def fill_unseen(texture: np.ndarray, seen: np.ndarray, radius: int = 3) -> np.ndarray:
    """Fill every texel not seen (holes in the head and the off-head region) by cv2.inpaint (Telea) from the seen ones.

    Mirroring across u = 0.5 first was measured and rejected (-0.15 dB thirds, -0.02 dB visibility on 32
    rendered identities): the lighting is not symmetric, and what no view sees (crown, under the chin)
    is symmetric itself, so the mirror texel is rarely seen either.
    """
    texture = np.clip(texture + 0.5, 0, 255).astype(np.uint8) if texture.dtype != np.uint8 else texture
    if seen.all():
        return texture.copy()
    if not seen.any():
        return np.zeros_like(texture)
    return cv2.inpaint(texture, (~seen).astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def enclosed_holes(seen: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Unseen valid texels that seen texels enclose (4-connected, not reaching the off-head region or the border)."""
    unseen = ~seen | ~valid
    count, labels = cv2.connectedComponents(unseen.astype(np.uint8), connectivity=4)
    border = np.zeros_like(unseen)
    border[[0, -1], :] = border[:, [0, -1]] = True
    open_labels = np.unique(labels[(~valid | border) & unseen])
    return unseen & valid & ~np.isin(labels, open_labels)


def seam_ratio(texture: np.ndarray, label: np.ndarray, sources: np.ndarray, region: np.ndarray) -> float:
    """How strongly the seams between sources show: mean luminance step of the texture across source
    boundaries / mean step of the two sources themselves across the same texel pairs (floor 1 grey level).

    texture (U, U, 3); label (U, U) = index into sources (V, U, U, 3) of the source that supplies each
    texel (-1 = none); only pairs inside `region` count. ~1 when the blend keeps the sources' own edges
    there, large when a colour or lighting offset between sources shows; 0 without boundaries.
    """
    luminance = texture.astype(np.float32).mean(axis=2)
    source_luminance = sources.astype(np.float32).mean(axis=3)
    height, width = label.shape
    blended, own = [], []
    for dr, dc in ((1, 0), (0, 1)):  # vertical, then horizontal neighbours p -> q
        a, b = label[:height - dr, :width - dc], label[dr:, dc:]
        pair = region[:height - dr, :width - dc] & region[dr:, dc:] & (a != b) & (a >= 0) & (b >= 0)
        rows, cols = np.nonzero(pair)
        a, b = a[rows, cols], b[rows, cols]
        blended.append(np.abs(luminance[rows, cols] - luminance[rows + dr, cols + dc]))
        own.append((np.abs(source_luminance[a, rows, cols] - source_luminance[a, rows + dr, cols + dc])
                    + np.abs(source_luminance[b, rows, cols] - source_luminance[b, rows + dr, cols + dc])) / 2)
    blended, own = np.concatenate(blended), np.concatenate(own)
    if len(blended) == 0:
        return 0.0
    return float(blended.mean() / max(float(own.mean()), 1.0))


def colour_features(texture: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean and standard deviation per RGB channel over the valid region (6,)."""
    texels = texture[valid].astype(np.float64)
    return np.concatenate([texels.mean(0), texels.std(0)])


def robust_z(features: np.ndarray) -> np.ndarray:
    """Robust z-scores (N, F) per column: 0.6745 (x - median) / MAD (Iglewicz and Hoaglin)."""
    median = np.median(features, axis=0)
    mad = np.median(np.abs(features - median), axis=0)
    return 0.6745 * (features - median) / np.maximum(mad, 1e-6)


def gate_reasons(unseen_fraction: float, hole_fraction: float, seams: float, colour_z: float, params: BlendParams) -> list[str]:
    """The quality-gate rejection reasons of one texture (empty = accepted)."""
    reasons = []
    if unseen_fraction > params.max_unseen_fraction:
        reasons.append("unseen")
    if hole_fraction > params.max_hole_fraction:
        reasons.append("holes")
    if seams > params.max_seam_ratio:
        reasons.append("seams")
    if colour_z > params.max_colour_z:
        reasons.append("colour")
    return reasons


# ---------------------------------------------------------------- thirds (thesis 3.3, Appendix A)

def assign_thirds(visible: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Which of three views supplies the left, centre and right third: the permutation that sees most of them.

    Decided from the visibility masks, not from a yaw convention: with ours, +35° (nose to the image
    right) sees the subject's right side = the head's -x side = the left third (u < 1/3).
    """
    c0, c1 = third_bounds(valid.shape[1])
    thirds = [slice(0, c0), slice(c0, c1), slice(c1, None)]
    seen = np.array([[(v[:, t] & valid[:, t]).sum() / max(valid[:, t].sum(), 1) for t in thirds] for v in visible])
    best = max(itertools.permutations(range(3)), key=lambda p: sum(seen[p[k], k] for k in range(3)))
    return np.array(best)


def _clone(source: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone (normal clone) that puts `source`'s masked part exactly where it is in `destination`.

    OpenCV copies the mask's bounding box to the box of the same size whose corner is
    centre - size // 2, so the centre is min + size // 2 (the listing's image centre is off by one for
    some widths). OpenCV also zeroes the mask's outer ring and erodes the mask by 3 px (the destination's
    gradients guide the solve there), so a mask must stay clear of the image border.
    """
    rows, cols = np.nonzero(mask)
    centre = (int(cols.min() + (cols.max() - cols.min() + 1) // 2), int(rows.min() + (rows.max() - rows.min() + 1) // 2))
    return cv2.seamlessClone(source, destination, mask, centre, cv2.NORMAL_CLONE)


def thirds_blend(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Appendix A, corrected: three rounds of Poisson blending of complete textures (U, U, 3) uint8.

    1. the centre third of `centre` cloned onto `left` and onto `right`;
    2. the left half of the first result joined to the right half of the second;
    3. the centre third cloned again over the join, hiding the seam in the middle.
    Fixes: the result is returned (the listing appends to an undefined list). The listing's mask spans
    the full height, so seamlessClone's zeroed ring and 3 px erosion leave the top and bottom rows of
    the centre third to the side views, and whatever lies there (the join's seam in round 3) becomes
    a boundary condition. Here the images are mirrored above and below by their full height and the
    mask runs through the mirrors: the centre third meets the side views only at its left and right
    edges, and its top and bottom edges follow the centre view's gradients (a mirror-symmetric solution
    has the Neumann condition there; the mask's own ends lie a full height away, where their influence
    on a third-wide strip has decayed by exp(-3π)).
    """
    height, width = centre.shape[:2]
    c0, c1 = third_bounds(width)
    grow = lambda image: cv2.copyMakeBorder(image, height, height, 0, 0, cv2.BORDER_REFLECT)  # noqa: E731
    left, centre, right = grow(left), grow(centre), grow(right)
    mask = np.zeros(centre.shape[:2], dtype=np.uint8)
    mask[1:-1, c0:c1] = 255
    on_left = _clone(centre, left, mask)
    on_right = _clone(centre, right, mask)
    half = width // 2
    joined = np.concatenate([on_left[:, :half], on_right[:, half:]], axis=1)
    return _clone(centre, joined, mask)[height:2 * height]


def thirds_texture(pafs: np.ndarray, visible: np.ndarray, valid: np.ndarray, inpaint_radius: int = 3) -> Blended:
    """Thesis 3.3 on three partial textures (3, U, U, 3) uint8 with visibility (3, U, U) bool.

    Each view's unseen texels are first filled from its own seen ones (3DDFA's PAFs, which the thesis
    blended, had no holes: they interpolated). `seen`: the valid texels each third's own view saw.
    """
    order = assign_thirds(visible, valid)
    filled = np.stack([fill_unseen(pafs[v], visible[v] & valid, inpaint_radius) for v in order])
    texture = thirds_blend(*filled)
    c0, c1 = third_bounds(valid.shape[1])
    label = np.digitize(np.arange(valid.shape[1]), [c0, c1])[None].repeat(valid.shape[0], axis=0)
    seen = np.take_along_axis(visible[order], label[None], axis=0)[0] & valid
    return Blended(texture, seen, seam_ratio(texture, label, filled, seen))


# ---------------------------------------------------------------- visibility (beyond the thesis)

def visibility_weights(visible: np.ndarray, cosine: np.ndarray, power: float, feather_texels: float) -> np.ndarray:
    """Per view and texel (V, U, U): cos(view angle)^power × min(1, distance to the edge of the view's visible area / feather).

    Grazing texels are blurred (foreshortening) and texels at an occlusion edge or silhouette mix in
    what lies beside them in the photo; both get less weight. Every visible texel keeps a weight > 0.
    """
    distance = np.stack([cv2.distanceTransform(v.astype(np.uint8), cv2.DIST_L2, 3) for v in visible])
    feather = np.minimum(1.0, distance / feather_texels)
    return np.where(visible, np.power(np.maximum(cosine, 1e-3), power) * feather, 0.0).astype(np.float32)


def _pyramid_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(width, height) of each level of a cv2.pyrDown pyramid, finest first."""
    sizes = [(width, height)]
    for _ in range(levels - 1):
        width, height = (width + 1) // 2, (height + 1) // 2
        sizes.append((width, height))
    return sizes


def push_pull(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Extend image (H, W, C) float32 from its known texels (H, W) into the rest, smoothly (Gortler et al. 1996).

    Pull: pyramids of the known-weighted colours and of the weights down to one texel. Push: from the
    coarsest level up, each level keeps its own colour where it knows it and takes the upsampled
    coarser estimate in proportion to what it lacks. Known texels come back unchanged.
    """
    sizes = _pyramid_sizes(*image.shape[:2], int(np.ceil(np.log2(max(image.shape[:2])))) + 1)
    colour, weight = [image * known[..., None]], [known.astype(np.float32)]
    for size in sizes[1:]:
        colour.append(cv2.pyrDown(colour[-1], dstsize=size).reshape(size[::-1] + image.shape[2:]))
        weight.append(cv2.pyrDown(weight[-1], dstsize=size).reshape(size[::-1]))
    filled = colour[-1] / np.maximum(weight[-1], 1e-6)[..., None]
    for k in range(len(sizes) - 2, -1, -1):
        coarse = cv2.pyrUp(filled, dstsize=sizes[k]).reshape(sizes[k][::-1] + image.shape[2:])
        coverage = np.clip(weight[k], 0.0, 1.0)[..., None]
        filled = colour[k] + (1.0 - coverage) * coarse
    return np.where(known[..., None], image, filled)


def multiband_blend(textures: np.ndarray, weights: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend (Burt and Adelson 1983) of textures (V, H, W, C) float32 by weights (V, H, W) summing to 1.

    Each band is mixed with weights blurred to its scale: fine detail switches sharply between
    views, low frequencies (lighting, colour offsets) cross over gradually, so no seam shows.
    """
    sizes = _pyramid_sizes(*textures.shape[1:3], levels)
    result = None
    for texture, weight in zip(textures, weights):
        gaussian, weight_pyramid = [texture], [weight]
        for size in sizes[1:]:
            gaussian.append(cv2.pyrDown(gaussian[-1], dstsize=size))
            weight_pyramid.append(cv2.pyrDown(weight_pyramid[-1], dstsize=size))
        bands = [g - cv2.pyrUp(gaussian[k + 1], dstsize=sizes[k]) for k, g in enumerate(gaussian[:-1])] + [gaussian[-1]]
        contribution = [b * w[..., None] for b, w in zip(bands, weight_pyramid)]
        result = contribution if result is None else [r + c for r, c in zip(result, contribution)]
    image = result[-1]
    for k in range(levels - 2, -1, -1):
        image = cv2.pyrUp(image, dstsize=sizes[k]) + result[k]
    return image


def visibility_texture(
    pafs: np.ndarray, visible: np.ndarray, cosine: np.ndarray, valid: np.ndarray,
    power: float = 2.0, feather_texels: float = 4.0, levels: int = 4, inpaint_radius: int = 3,
) -> Blended:
    """Visibility-weighted multi-band blend of all views: pafs (V, U, U, 3) uint8, visible (V, U, U) bool, cosine in [0, 1].

    `seen`: the valid texels some view sees; seams are measured between the views of largest weight.
    """
    visible = visible & valid
    weights = visibility_weights(visible, cosine, power, feather_texels)
    total = weights.sum(0)
    seen = total > 0
    colours = pafs.astype(np.float32)
    average = (weights[..., None] * colours).sum(0) / np.maximum(total, 1e-12)[..., None]
    composite = fill_unseen(average, seen, inpaint_radius).astype(np.float32)
    # Each view is extended smoothly (push-pull) over what it does not see, so its pyramid has no false
    # edges at the border of its visibility; where no view sees, every view carries the same filled
    # composite, so any weights return it.
    textures = np.stack([
        push_pull(np.where(v[..., None], c, composite), v | ~seen) for v, c in zip(visible, colours)
    ])
    normalised = np.where(seen, weights / np.maximum(total, 1e-12), 1.0 / len(pafs)).astype(np.float32)
    texture = multiband_blend(textures, normalised, levels)
    texture = np.clip(texture + 0.5, 0, 255).astype(np.uint8)
    label = np.where(seen, weights.argmax(0), -1)
    return Blended(texture, seen, seam_ratio(texture, label, textures, seen))
