"""Evaluation core: region metrics, baselines and a stratified, deterministic mask assignment (no I/O)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from headtex.detection import Detection, faces_found, landmark_problem, merge_faces
from headtex.facemesh import person_mask
from headtex.fitting import Fit, FitParams, JawRegion, fit_landmarks, photo_partial_texture
from headtex.geometry.template import Template, fill_invalid, render_view
from headtex.identity import face_descriptor
from headtex.masking import blob_mask, is_visible, missing_region
from headtex.metrics import region_psnr, region_ssim


def coverage(visible_mask: np.ndarray, valid: np.ndarray) -> float:
    """Share of the UV valid region that a mask leaves missing."""
    return float(missing_region(visible_mask, valid).sum() / max(valid.sum(), 1))


def bucket_of(share: float, edges: list[float]) -> int:
    """Index of the bucket [edges[i], edges[i+1]) holding a missing share."""
    return int(np.clip(np.searchsorted(edges, share, side="right") - 1, 0, len(edges) - 2))


MASK_KINDS = ("real", "free_form")  # a real bank mask (a held-out view's visibility) or a seeded stroke mask


def assign_masks(
    test_count: int, candidate_coverage: np.ndarray, candidate_kind: np.ndarray, edges: list[float],
    per_texture: int, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`per_texture` deterministic masks per test texture, stratified by kind and by bucket.

    Draw j of texture i is of kind (i * per_texture + j) mod K (K = kinds that have candidates: with an even
    `per_texture`, half of every texture's masks are real, half free-form); the n-th draw of a kind goes to
    that kind's n-th bucket in turn (among its buckets that have candidates), so every (kind, bucket) stratum
    gets samples and the buckets of each kind stay balanced; the mask is then a seeded choice among that
    stratum's candidates, one the texture has not drawn yet when the stratum has one.
    Returns per draw (texture-major): texture index, candidate index, bucket, kind (index into MASK_KINDS).
    """
    candidate_kind = np.asarray(candidate_kind)
    buckets = np.array([bucket_of(c, edges) for c in candidate_coverage], dtype=np.int64)
    kinds = [k for k in range(len(MASK_KINDS)) if np.any(candidate_kind == k)]
    if not kinds:
        raise ValueError("no candidate masks to evaluate with")
    available = {k: [b for b in range(len(edges) - 1) if np.any((buckets == b) & (candidate_kind == k))]
                 for k in kinds}
    rng = np.random.default_rng([seed, 7])
    drawn = {k: 0 for k in kinds}
    rows = []
    for texture in range(test_count):
        used: set[int] = set()
        for j in range(per_texture):
            kind = kinds[(texture * per_texture + j) % len(kinds)]
            bucket = available[kind][drawn[kind] % len(available[kind])]
            drawn[kind] += 1
            stratum = np.flatnonzero((buckets == bucket) & (candidate_kind == kind))
            fresh = np.array([c for c in stratum if c not in used]) if len(stratum) > 1 else stratum
            candidate = int(rng.choice(fresh if len(fresh) else stratum))
            used.add(candidate)
            rows.append((texture, candidate, bucket, kind))
    texture_index, candidate_index, bucket_index, kind_index = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return texture_index, candidate_index, bucket_index, kind_index


def bootstrap_mean(values: np.ndarray, textures: np.ndarray, resamples: int, seed: int,
                   level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean of per-draw scores and its percentile bootstrap interval over textures: each resample draws the
    textures with replacement and takes all their draws (a texture's masks are not independent samples).

    Non-finite scores (PSNR of a perfect fill) are left out. One seed for every call: methods scored on the
    same draws are resampled alike (paired). (None, None, None) when nothing is scored.
    """
    values, textures = np.asarray(values, dtype=np.float64), np.asarray(textures)
    finite = np.isfinite(values)
    values, textures = values[finite], textures[finite]
    if not len(values):
        return None, None, None
    _, cluster = np.unique(textures, return_inverse=True)
    sums, counts = np.bincount(cluster, weights=values), np.bincount(cluster).astype(np.float64)
    picks = np.random.default_rng([seed, 79]).integers(0, len(sums), (resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(low), float(high)


def region_scores(prediction: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """L1 (in [0, 1] units), PSNR (dB) and SSIM of uint8 RGB images, averaged over the region's texels."""
    if not region.any():
        return {"l1": 0.0, "psnr": float("inf"), "ssim": 1.0}
    l1 = float(np.abs(prediction[region].astype(np.float64) - truth[region].astype(np.float64)).mean() / 255.0)
    return {"l1": l1, "psnr": region_psnr(prediction, truth, region), "ssim": region_ssim(prediction, truth, region)}


# ---- real photographs: hide part of what the photo shows, score on it ----

PHOTO_MASK_PURPOSE = 73  # rng purpose of the bank masks drawn per real face
PHOTO_BLOB_PURPOSE = 74  # rng purpose of the blob masks drawn per real face


def photo_faces(image: np.ndarray, fitting: FitParams, upsample: int) -> list[Detection]:
    """Every face of a photo, most prominent first (detection.merge_faces' rule): HOG at `upsample` (one step more when
    it finds none), confirmed and completed by pafs' fallback detector (the CNN finds the turned faces HOG misses)."""
    hog: list[Detection] = []
    for step in (upsample, upsample + 1):
        hog = faces_found(image, fitting.detector, step)
        if hog:
            break
    second = faces_found(image, fitting.fallback_detector, fitting.fallback_upsample) if fitting.fallback_detector else []
    return merge_faces(hog, second)


def photo_partial(image: np.ndarray, face: Detection, others: list[tuple[float, float, float, float]],
                  template: Template, jaw: JawRegion, fitting: FitParams, correction_threshold: float,
                  sample_max_side: int, segmentation_model: Path | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Fit] | str:
    """One face's partial UV texture and its visibility (255 = seen), as reconstruct builds them: the template fitted
    to its 68 landmarks with the photos' correction threshold, texels sampled through the fitted mesh from the head
    crop (fitting.photo_partial_texture, reconstruct's own path), and with fitting.person_mask only the pixels of the
    person (facemesh.person_mask with the selfie model `segmentation_model`, less the `others` faces' boxes).
    Returns (partial, visibility, the fit); a phrase saying why not, when not."""
    problem = landmark_problem(face.landmarks)
    if problem:
        return f"face rejected: {problem}"
    fit = fit_landmarks(template, face.landmarks, fitting.shape_regularisation, fitting.fit_iterations,
                        fitting.contour, jaw, fitting.correction, correction_threshold, fitting.correction_radius_mm)
    person = None
    if fitting.person_mask:
        if segmentation_model is None:
            raise ValueError("pafs.person_mask needs the selfie segmentation model (the template's face mesh files)")
        person = person_mask(image, face.box, others, segmentation_model, fitting.person_threshold)
    paf, visible, _, _ = photo_partial_texture(image, template, fit, fitting.max_view_angle_degrees,
                                               fitting.depth_tolerance_mm, sample_max_side, person)
    return paf, visible, fit


NOVEL_VIEW_SIZE = 256  # renders for the identity check: the face ~120 px wide, where dlib's descriptor is at home


def novel_view_distances(template: Template, fit: Fit, textures: dict[str, np.ndarray], photo_descriptor: np.ndarray,
                         yaws: list[float]) -> dict[str, list[float | None]]:
    """Per method: dlib's descriptor distance between the photo's face and the head, shaped by the fit and textured by
    the method's completion, rendered at each yaw (pitch and roll 0); None where dlib finds no face in the render."""
    vertices = fit.vertices(template)
    distances: dict[str, list[float | None]] = {}
    for method, texture in textures.items():
        distances[method] = []
        for yaw in yaws:
            render, _ = render_view(template, vertices, fill_invalid(texture, template.texel_valid), yaw,
                                    NOVEL_VIEW_SIZE)
            descriptor = face_descriptor(render)
            distances[method].append(None if descriptor is None else
                                     round(float(np.linalg.norm(descriptor - photo_descriptor)), 4))
    return distances


FACE_OUTLINE = np.r_[0:27]  # ibug jaw (0-16) and brows (17-26): their hull in UV is the face, brow to chin


def face_texels(template: Template) -> np.ndarray:
    """U,U bool: the texels inside the UV hull of the jaw and brow landmarks, where a photo's texels are the face.

    Outside it, at the fitted silhouette and above the brows, a photo's texels hold hair and background the
    template's surface does not model: hiding those would score methods on predicting the backdrop."""
    size = template.texel_valid.shape[0]
    corners = template.vertex_uv[template.landmark_ids[FACE_OUTLINE]] * size - 0.5
    hull = cv2.convexHull(np.rint(corners * 16).astype(np.int32))
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, hull, 1, lineType=cv2.LINE_8, shift=4)
    return face.astype(bool) & template.texel_valid


def photo_masks(visible: np.ndarray, bank: np.ndarray, valid: np.ndarray, count: int, min_hidden: float,
                seed: int, photo: int, face: int = 0) -> np.ndarray:
    """Indices of `count` bank masks (distinct where the bank allows) that each hide at least `min_hidden` of the
    face's seen texels (`visible`: the seen texels that may be hidden): a seeded choice per photo and face, so reruns
    hide the same texels. Empty when none qualifies."""
    seen = is_visible(visible) & valid
    hidden = np.array([(seen & ~is_visible(mask)).sum() for mask in bank]) / max(int(seen.sum()), 1)
    eligible = np.flatnonzero(hidden >= min_hidden)
    if not len(eligible):
        return eligible
    rng = np.random.default_rng([seed, PHOTO_MASK_PURPOSE, photo, face])
    return rng.choice(eligible, size=count, replace=count > len(eligible))


def photo_blobs(visible: np.ndarray, count: int, seed: int, photo: int, face: int) -> np.ndarray:
    """`count` seeded blob masks (N,U,U uint8, 255 = visible) centred in the face's seen texels (`visible`): interior
    holes, where the fill has seen texels all around (bank masks hide a whole side)."""
    rng = np.random.default_rng([seed, PHOTO_BLOB_PURPOSE, photo, face])
    return np.stack([blob_mask(rng, is_visible(visible)) for _ in range(count)]) if count else \
        np.zeros((0, *visible.shape), np.uint8)


def hide(visible: np.ndarray, mask: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(what a method is given, 255 = known: every seen texel but the hidden ones; the hidden-but-known texels:
    seen, inside the face, and missing from the bank mask)."""
    seen = is_visible(visible)
    hidden = seen & face & ~is_visible(mask)
    return np.where(seen & ~hidden, 255, 0).astype(np.uint8), hidden


def scored_on_seen(prediction: np.ndarray, truth: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The prediction with the texels the photo never showed set to the truth's (empty) value, so that SSIM's
    windows at the edge of the hidden region compare only what is known on both sides."""
    out = prediction.copy()
    unseen = ~is_visible(visible)
    out[unseen] = truth[unseen]
    return out
