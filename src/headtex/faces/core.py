"""Faces core: synthetic multi-view identities with ground truth, and conversion of real photos (arrays only, no I/O).

A synthetic identity is the head template with sampled shape and expression
coefficients (the template's named modes), an albedo variation (skin tone, hair
tone and hairstyle, beard, eyebrows, lips, make-up, freckles and moles, age
wrinkles, glasses, clothing, brightness/contrast, all in CIELAB on soft regions
of the UV layout), one light (ambient + directional, colour temperature) fixed in
the head frame and one background; the camera orbits the lit head, so the
identity's lit UV texture is the ground truth seen by every view.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from headtex.fitting import Fit, partial_texture
from headtex.geometry import Light, project, render_textured, rotation_matrix
from headtex.geometry.rbf import wendland_field
from headtex.geometry.template import Template, default_camera, lit_texture
from headtex.params import param

# Purposes of the per-identity random streams: np.random.default_rng([seed, identity, purpose]).
SHAPE, LOOK, LIGHT, BACKGROUND, POSE, LOCAL, PERSON = range(7)

# Blackbody colours in sRGB (D65 white), from published blackbody colour tables; interpolated for the light's tint.
KELVIN = np.array([3000, 3500, 4000, 4500, 5000, 5500, 6000, 6500, 7000, 7500, 8000, 9000, 10000], dtype=np.float64)
KELVIN_RGB = np.array([
    [255, 180, 107], [255, 196, 137], [255, 209, 163], [255, 219, 186], [255, 228, 206], [255, 236, 224],
    [255, 243, 239], [255, 249, 253], [245, 243, 255], [235, 238, 255], [227, 233, 255], [214, 225, 255],
    [204, 219, 255],
], dtype=np.float64)


SOURCES = ("generated", "synthetic", "stylegan", "directory", "eigengan")
RENDERED = ("generated", "synthetic")  # the sources rendered from the template, with ground truth
RANGE_KEYS = ("skin_lightness", "skin_a", "skin_b", "beard", "mirror_blend", "brightness", "contrast", "ambient",
              "diffuse", "colour_temperature_kelvin", "background_value", "background_saturation")
BACKGROUND_KINDS = ("solid", "gradient", "noise")
HAIRSTYLES = ("short", "long", "fringe", "receding", "bald")
FEATURE_RANGE_KEYS = ("brow_density", "brow_thickness", "brow_arch", "lip_redness", "lip_lightness", "age")


@dataclass
class FacesParams:
    """The `faces:` section of params.yaml (alpha_background is the shared `photos.alpha_background`)."""

    source: str = param("generated (render the template with a generated person's face) | synthetic (the template's "
                        "own face, painted) | stylegan (generated people turned along a yaw direction, no ground "
                        "truth) | directory (real photos under dir, no ground truth) | eigengan (EigenGAN people, no "
                        "ground truth)", choices=SOURCES)
    truncation: float = param("generated, stylegan: styles pulled towards the mean style by this (1 = none)",
                              gt=0, le=1)
    stylegan_max_step_sigma: float = param("stylegan: the largest step along the yaw direction, in the pose "
                                           "samples' standard deviations along it", gt=0)
    dir: str | None = param("directory source: one sub-folder per identity holding its views")
    eigengan_weights: str | None = param("eigengan source: the generator checkpoint (.pt) in the PyTorch port's layout")
    eigengan_pose: list[int | None] = param("eigengan: [layer, dim] traversed for the views, 0-based as the port's "
                                            "traverse_L{layer}_D{dim}; dim null = that layer's largest |L|")
    eigengan_pose_range: list[float] = param("eigengan: the pose coordinate at the lowest and at the highest yaw "
                                             "(z ~ N(0, 1), so 2 = 2 sigma)")
    eigengan_truncation: float = param("eigengan: the latent is scaled by this (1 = none)", gt=0, le=1)
    identities: int = param("synthetic identities (the thesis: 100,000)", ge=1)
    image_size: int = param("square images, pixels", ge=32)
    yaw_degrees: list[float] = param("the views' yaws, degrees (positive = nose to the image right)", gt=-90)
    seed: int = param("every random choice: np.random.default_rng([seed, identity, purpose])")
    shard_size: int = param("views per shard (an identity is never split across shards)", ge=1)
    supersample: int = param("render at this multiple of image_size, area-average down", ge=1)
    pitch_jitter_degrees: float = param("per view: pitch uniform in +-this", ge=0)
    roll_jitter_degrees: float = param("per view: roll uniform in +-this", ge=0)
    shape_std: float = param("std of each shape coefficient (1 = one typical adult standard deviation)", ge=0)
    shape_std_scale: dict[str, float] = param("... times this per mode", ge=0)
    shape_clip: float = param("coefficients clipped at +-shape_clip stds", gt=0)
    local_offsets_mm: list[float] = param("local shape detail: std (mm) of the random offsets of each landmark group, "
                                          "of each landmark within its group, and of the cheekbones", ge=0)
    local_asymmetry: float = param("local shape detail: std of the asymmetric part, times the symmetric one", ge=0)
    local_depth_scale: float = param("local shape detail: depth (z) offsets' std, times the in-plane one", ge=0)
    local_radius_mm: float = param("local shape detail: support radius of the Wendland RBFs that spread the "
                                   "landmark offsets over the head, mm", gt=0)
    hog_resample_attempts: int = param("synthetic: an identity with a view at |yaw| <= 45 that dlib's HOG misses gets "
                                       "its shape and light redrawn up to this many times (0 = never)", ge=0)
    skin_lightness: list[float] = param("skin tone: target median CIELAB L* range")
    skin_a: list[float] = param("target median a* range (redness)")
    skin_b: list[float] = param("target median b* range (yellowness)")
    hair_tones: dict[str, list[float]] = param("hair colour: name: [L*, a*, b*, weight]")
    hair_jitter: list[float] = param("std of the hair colour around its tone (L*, a*, b*)", ge=0)
    beard: list[float] = param("stubble density range: 0 clean-shaven, 1 the scan's", ge=0)
    mirror_blend: list[float] = param("share of the mirrored albedo mixed in", ge=0, le=1)
    brightness: list[float] = param("albedo L* offset range (x100)")
    contrast: list[float] = param("albedo L* contrast range about 50", ge=0)
    ambient: list[float] = param("light: ambient intensity range", ge=0)
    diffuse: list[float] = param("light: directional intensity range (Lambert)", ge=0)
    light_cone_degrees: float = param("light direction: uniform within this cone about front-and-above", ge=0, le=90)
    colour_temperature_kelvin: list[float] = param("light colour (blackbody) range", ge=1000)
    background_kinds: list[str] = param("backgrounds: some of solid, gradient, noise")
    background_value: list[float] = param("background colours: HSV value range", ge=0, le=1)
    background_saturation: list[float] = param("background colours: HSV saturation range", ge=0, le=1)
    hairstyles: dict[str, float] = param("hairstyle: name: weight (short, long, fringe, receding, bald)", ge=0)
    brow_density: list[float] = param("eyebrow darkness range: 0 none, 1 the scan's", ge=0)
    brow_thickness: list[float] = param("painted eyebrow thickness range, texels of a 512 layout", ge=0)
    brow_arch: list[float] = param("painted eyebrow arch range, texels of a 512 layout (negative = flatter)")
    lip_redness: list[float] = param("lip a* shift range (CIELAB)")
    lip_lightness: list[float] = param("lip L* shift range (CIELAB)")
    makeup_probability: float = param("share of identities with lipstick and eye shadow", ge=0, le=1)
    freckles_probability: float = param("share of identities with freckles", ge=0, le=1)
    max_moles: int = param("moles per identity: uniform 0..max_moles", ge=0)
    age: list[float] = param("age range: 0 young (no wrinkles) ... 1 old (wrinkles, grey hair likelier)", ge=0, le=1)
    glasses_probability: float = param("share of identities wearing glasses (painted frames in the UV layout)",
                                       ge=0, le=1)
    detection_check_identities: int | None = param("dlib HOG check over this many identities (null = all)", ge=0)
    identity_check_identities: int | None = param("dlib face-descriptor check over this many identities (null = all)",
                                                  ge=0)
    identity_max_pairs: int | None = param("identity check: a seeded sample of this many identity pairs at most "
                                           "(null = all)", ge=1)
    square: str = param("directory source: non-square photos are centre-cropped or padded", choices=("crop", "pad"))
    uv_size: int = param("texture side in texels (the ground-truth lit texture)", shared="uv.size")
    alpha_background: list[int] = param("RGB that transparent pixels are composited on (and the pad colour)",
                                        shared="photos.alpha_background", ge=0, le=255)

    def __post_init__(self) -> None:
        problems = []
        if self.source == "directory" and not self.dir:
            problems.append("source 'directory' needs dir (a folder with one sub-folder per identity)")
        if self.source == "eigengan" and not self.eigengan_weights:
            problems.append("source 'eigengan' needs eigengan_weights (the generator checkpoint)")
        pose = self.eigengan_pose
        if len(pose) != 2 or pose[0] is None or any(v is not None and v < 0 for v in pose):
            problems.append(f"eigengan_pose must be [layer >= 0, dim >= 0 or null], not {pose}")
        if len(self.eigengan_pose_range) != 2 or self.eigengan_pose_range[0] == self.eigengan_pose_range[1]:
            problems.append(f"eigengan_pose_range must be two different values, not {self.eigengan_pose_range}")
        if not self.yaw_degrees or any(abs(y) >= 90 for y in self.yaw_degrees):
            problems.append("yaw_degrees must list at least one view, each within (-90, 90)")
        problems += [f"{name} must be a range [low, high], not {getattr(self, name)}"
                     for name in RANGE_KEYS + FEATURE_RANGE_KEYS
                     if len(getattr(self, name)) != 2 or getattr(self, name)[0] > getattr(self, name)[1]]
        if not self.hair_tones or any(len(v) != 4 or v[3] < 0 for v in self.hair_tones.values()):
            problems.append("hair_tones must map names to [L, a, b, weight >= 0]")
        if not self.hairstyles or set(self.hairstyles) - set(HAIRSTYLES) or sum(self.hairstyles.values()) <= 0:
            problems.append(f"hairstyles must map some of {', '.join(HAIRSTYLES)} to weights with a positive sum")
        unknown = sorted(set(self.background_kinds) - set(BACKGROUND_KINDS))
        if not self.background_kinds or unknown:
            problems.append(f"background_kinds must be some of {', '.join(BACKGROUND_KINDS)} (unknown: {unknown})")
        if len(self.local_offsets_mm) != 3:
            problems.append(f"local_offsets_mm must be [group, landmark, cheekbone] stds, not {self.local_offsets_mm}")
        if len(self.alpha_background) != 3:
            problems.append(f"photos.alpha_background must be [R, G, B], not {self.alpha_background}")
        if problems:
            raise ValueError("; ".join(problems))


# --- appearance regions of the template (computed once per template) -------------------------------------

REGION_NAMES = ("skin", "hair", "brows", "beard", "clothing", "lips", "eyelids", "long_hair")


@dataclass
class Regions:
    """Soft regions of the template albedo in the UV layout (float32 in [0, 1]) and their reference CIELAB colours."""

    skin: np.ndarray
    hair: np.ndarray
    brows: np.ndarray
    beard: np.ndarray
    clothing: np.ndarray
    lips: np.ndarray
    eyelids: np.ndarray  # above the eyes (eye shadow)
    long_hair: np.ndarray  # the sides of the neck below the ears (where long hair falls)
    skin_lab: np.ndarray  # 3: median L*, a*, b* of the skin
    hair_lab: np.ndarray
    clothing_lab: np.ndarray
    points: np.ndarray  # 68,2 the landmarks' UVs in [0, 1] (where features are painted)
    hairline: float  # v of the scan's hairline above the nose bridge, in [0, 1]
    boxes: dict[str, tuple[slice, slice]] = field(init=False)  # where each region is non-zero (work is done there only)

    def __post_init__(self) -> None:
        self.boxes = {}
        for name in REGION_NAMES:
            rows, cols = np.nonzero(getattr(self, name) > 1e-3)
            self.boxes[name] = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)) if len(rows) \
                else (slice(0, 0), slice(0, 0))

    def resized(self, size: int) -> Regions:
        """The same regions at another UV resolution (area-averaged, so edges stay soft)."""
        def resize(mask: np.ndarray) -> np.ndarray:
            return cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)

        return Regions(*(resize(getattr(self, name)) for name in REGION_NAMES), self.skin_lab, self.hair_lab,
                       self.clothing_lab, self.points, self.hairline)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # = 1 / (1 + exp(-t)), without overflow


def appearance_regions(albedo: np.ndarray, valid: np.ndarray, landmark_uv: np.ndarray) -> Regions:
    """Skin, hair, beard and clothing regions of a template albedo, from its colours and the 68 landmarks' UVs.

    Hair = dark texels outside the face (the hull of the jaw and brow landmarks);
    brows = dark texels along the brow landmarks; clothing = bright, colourless
    texels below the chin; beard = skin of the lower face and under the chin;
    skin = the rest of the head minus the eyes.
    Lengths are in texels of a 512 layout, scaled to the albedo's size.
    """
    size = albedo.shape[0]
    unit = size / 512.0
    lab = to_lab(albedo)
    lightness, chroma = lab[..., 0], np.hypot(lab[..., 1], lab[..., 2])
    points = landmark_uv * size - 0.5  # texel coordinates
    rows = np.arange(size, dtype=np.float32)[:, None]

    def blur(mask: np.ndarray, sigma: float) -> np.ndarray:
        return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma * unit)

    def hull(polygon: np.ndarray) -> np.ndarray:
        mask = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(mask, np.round(cv2.convexHull(polygon.astype(np.float32))).astype(np.int32), 1)
        return mask.astype(np.float32)

    face = hull(points[:27])
    dark = _sigmoid((28.0 - blur(lightness, 2.0)) / 4.0)
    hair = blur(dark * (1.0 - blur(face, 8.0)), 3.0)
    eyes = np.clip(1.5 * blur(cv2.dilate(np.maximum(hull(points[36:42]), hull(points[42:48])), np.ones((5, 5))), 2.0), 0, 1)
    below_chin = _sigmoid((rows - points[8, 1]) / (4.0 * unit))
    clothing = blur(_sigmoid((lightness - 85.0) / 3.0) * _sigmoid((15.0 - chroma) / 3.0) * below_chin, 2.0)
    brow_band = np.zeros((size, size), np.float32)
    for side in (points[17:22], points[22:27]):
        cv2.polylines(brow_band, [np.round(side).astype(np.int32)], False, 1.0, max(1, round(14 * unit)))
    brows = blur(brow_band, 3.0) * _sigmoid((40.0 - blur(lightness, 1.0)) / 3.0) * (1.0 - hair)
    skin = np.clip(1.0 - hair - eyes - clothing - brows, 0.0, 1.0) * blur(valid, 2.0)
    # Beard: the jaw below the nose plus a band under the chin, as one smooth region.
    jaw = np.vstack([points[2:15], points[2:15] + [0.0, 50.0 * unit], points[31:36]])
    below_nose = _sigmoid((rows - points[33, 1] - 6.0 * unit) / (3.0 * unit))
    beard = blur(hull(jaw) * below_nose, 8.0) * skin

    lips = blur(hull(points[48:60]), 1.5) * skin
    eye_hulls = np.maximum(hull(points[36:42]), hull(points[42:48]))
    above_eyes = _sigmoid((points[36:48, 1].mean() + 2.0 * unit - rows) / (2.0 * unit))
    eyelids = blur(cv2.dilate(eye_hulls, np.ones((2 * round(9 * unit) + 1,) * 2)) * above_eyes, 2.5) * skin
    # Long hair falls over the sides of the neck: outside the jaw, below the ears' tops, away from the throat.
    columns = np.arange(size, dtype=np.float32)[None, :]
    from_centre = np.abs(columns - points[27, 0]) / max(abs(points[0, 0] - points[27, 0]), 1.0)
    long_hair = blur(_sigmoid((from_centre - 1.1) / 0.05) * _sigmoid((rows - points[0, 1] - 10.0 * unit) / (6.0 * unit))
                     * (1.0 - blur(face, 6.0)) * (1.0 - clothing), 4.0) * blur(valid, 2.0)
    # The hairline: the first mostly-hair row above the nose bridge, along the face's centre line.
    centre_hair = hair[:int(points[27, 1]), int(round(points[27, 0]))]
    above = np.flatnonzero(centre_hair > 0.5)
    hairline = (float(above.max()) if len(above) else 0.0) / size

    def reference(weight: np.ndarray) -> np.ndarray:
        core = weight > 0.9 * weight.max()
        return np.median(lab[core], axis=0).astype(np.float32)

    return Regions(skin, hair, brows, beard, clothing, lips, eyelids, long_hair, reference(skin * (1.0 - beard)),
                   reference(hair), reference(clothing), ((points + 0.5) / size).astype(np.float32), hairline)


# --- per-identity sampling ----------------------------------------------------------------------------------

@dataclass
class Look:
    """An identity's albedo variation."""

    skin_lab: np.ndarray  # 3: target median skin colour (CIELAB)
    hair_lab: np.ndarray  # 3: target hair colour
    hair_contrast: float  # gain on the hair's strand detail
    beard: float  # 0 = clean-shaven ... 1 = the scan's stubble ... >1 = denser
    clothing_lab: np.ndarray
    mirror_blend: float  # share of the left-right mirrored albedo mixed in (changes asymmetric details)
    brightness: float
    contrast: float
    hairstyle: str  # one of HAIRSTYLES
    hairline_shift: float  # receding: how far the hairline moves up, in units of the forehead's height
    fringe_depth: float  # fringe: how far hair reaches down the forehead, same units
    brow_density: float  # 0 no brows ... 1 the scan's ... >1 darker
    brow_thickness: float  # painted brow thickness, texels of a 512 layout
    brow_arch: float  # painted brow arch, texels of a 512 layout
    lip_lab: np.ndarray  # 3: lip colour shift (L*, a*, b*)
    eye_shadow: float  # L* darkening above the eyes (make-up)
    age: float  # 0 ... 1: wrinkle strength
    freckles: np.ndarray  # N,3 (u, v, strength) freckle spots
    moles: np.ndarray  # M,3 (u, v, radius in texels of a 512 layout)
    glasses: np.ndarray | None  # 3: frame lightness, frame thickness, lens size (relative), None = no glasses
    detail_seed: int  # seed of the painted hair's strand noise


@dataclass
class Identity:
    """Everything random about one synthetic identity; identical across its views except the pose jitter."""

    identity: int
    shape: np.ndarray  # K float32 shape coefficients
    local_offsets: np.ndarray  # C,3 float32 mm: the local shape detail's offsets at local_centres (see local_field)
    local_radius_mm: float
    look: Look
    light: Light
    background: np.ndarray  # S,S,3 uint8
    yaw: np.ndarray  # V float32 degrees
    pitch: np.ndarray
    roll: np.ndarray
    face: PersonFace | None = None  # source `generated`: the face taken from a generated person ...
    vertex_offsets: np.ndarray | None = None  # ... and its fit's non-rigid correction (V,3 mm; None = none)


def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_shape(config: FacesParams, rng: np.random.Generator, basis_names: list[str]) -> np.ndarray:
    std = config.shape_std * np.array([config.shape_std_scale.get(name, 1.0) for name in basis_names])
    coefficients = np.clip(rng.standard_normal(len(basis_names)), -config.shape_clip, config.shape_clip) * std
    return coefficients.astype(np.float32)


# Local shape detail: landmark groups (ibug 68, 0-based; inner lip 60-67 excluded: it nearly coincides with the
# closed outer lip) whose members share one random offset, plus a small one of their own; the mirror map pairs
# each landmark with its counterpart across the face, so the symmetric part of the offsets is a mirror image.
LOCAL_GROUPS = (
    (0, 1, 2, 14, 15, 16), (3, 4, 12, 13), (5, 6, 10, 11), (7, 8, 9),  # jaw high, mid, low; chin
    (17, 18, 25, 26), (19, 20, 21, 22, 23, 24),  # brows: outer, inner
    (27, 28), (29, 30), (31, 35), (32, 34), (33,),  # nose: bridge, tip, alae, nostrils, columella
    (36, 45), (39, 42), (37, 38, 43, 44), (40, 41, 46, 47),  # eyes: outer, inner corners, upper, lower lids
    (48, 54), (49, 50, 51, 52, 53), (55, 56, 57, 58, 59),  # lips: corners, upper, lower outline
)
LOCAL_MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                         17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
                         52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 61, 60])  # 60, 61: the two cheekbones
LOCAL_LANDMARKS = 60  # centres 0-59 are those landmarks; 60, 61 the cheekbones


def local_centres(template: Template) -> np.ndarray:
    """The vertex ids (62) the local shape detail is anchored on: landmarks 0-59, then the two cheekbones (the
    vertices nearest midway between the jaw outline's landmark 1 / 15 and the outer eye corner 36 / 45)."""
    points = template.vertices[template.landmark_ids]
    cheekbones = [np.argmin(np.linalg.norm(template.vertices - (points[a] + points[b]) / 2, axis=1))
                  for a, b in ((1, 36), (15, 45))]
    return np.concatenate([template.landmark_ids[:LOCAL_LANDMARKS], cheekbones]).astype(np.int64)


def sample_local_offsets(config: FacesParams, rng: np.random.Generator) -> np.ndarray:
    """Random 3D offsets (62,3 mm) of the local centres: per group + per landmark + cheekbones, made
    mirror-symmetric, plus local_asymmetry times an independent draw of the same kind."""
    group_mm, point_mm, cheek_mm = config.local_offsets_mm
    axes = np.array([1.0, 1.0, config.local_depth_scale])

    def draw() -> np.ndarray:
        offsets = np.zeros((LOCAL_LANDMARKS + 2, 3))
        for members in LOCAL_GROUPS:
            offsets[list(members)] += rng.standard_normal(3) * axes * group_mm
        offsets[:LOCAL_LANDMARKS] += rng.standard_normal((LOCAL_LANDMARKS, 3)) * axes * point_mm
        offsets[LOCAL_LANDMARKS:] += rng.standard_normal(3) * axes * cheek_mm
        return offsets

    offsets = draw()
    mirrored = offsets[LOCAL_MIRROR] * np.array([-1.0, 1.0, 1.0])
    return ((offsets + mirrored) / 2 + config.local_asymmetry * draw()).astype(np.float32)


def local_field(template: Template, offsets: np.ndarray, radius_mm: float) -> np.ndarray:
    """The local shape detail as a displacement of every vertex (V,3 float32 mm): the offsets at the local
    centres, spread over the head by Wendland RBFs of radius radius_mm (nothing further from every centre moves)."""
    if not np.any(offsets):
        return np.zeros_like(template.vertices)
    centres = template.vertices[local_centres(template)]
    return wendland_field(template.vertices, centres, offsets, radius_mm).astype(np.float32)


def identity_vertices(template: Template, identity: Identity) -> np.ndarray:
    """The identity's head (V,3 mm): the template shaped by its mode coefficients plus its local shape detail."""
    vertices = template.shaped(identity.shape) + local_field(template, identity.local_offsets, identity.local_radius_mm)
    return vertices if identity.vertex_offsets is None else vertices + identity.vertex_offsets


def sample_look(config: FacesParams, rng: np.random.Generator) -> Look:
    skin = np.array([_uniform(rng, config.skin_lightness), _uniform(rng, config.skin_a), _uniform(rng, config.skin_b)])
    tones = np.array(list(config.hair_tones.values()), dtype=np.float64)
    tone = tones[rng.choice(len(tones), p=tones[:, 3] / tones[:, 3].sum()), :3]
    hair = tone + rng.standard_normal(3) * np.asarray(config.hair_jitter)
    hair[0] = np.clip(hair[0], 4.0, 80.0)
    hue = rng.uniform(0, 2 * np.pi)
    clothing = np.array([rng.uniform(15, 90), *(rng.uniform(0, 40) * np.array([np.cos(hue), np.sin(hue)]))])
    features = np.random.default_rng(rng.integers(2**32))  # a separate stream: the colours above keep their draws
    styles = sorted(config.hairstyles)
    weights = np.array([config.hairstyles[name] for name in styles], np.float64)
    hairstyle = styles[features.choice(len(styles), p=weights / weights.sum())]
    age = _uniform(features, config.age)
    if features.uniform() < age**2 * 0.6:  # older people are likelier grey
        hair[:] = np.array([features.uniform(50, 75), 0.0, features.uniform(0, 6)])
    makeup = features.uniform() < config.makeup_probability
    lip = np.array([_uniform(features, config.lip_lightness), _uniform(features, config.lip_redness), 0.0])
    if makeup:
        lip += np.array([features.uniform(-15, 0), features.uniform(10, 30), features.uniform(-5, 10)])
    # Freckles cluster on the nose and cheeks: spots about the nose tip's UV (offsets in the layout's units).
    count = features.integers(60, 250) if features.uniform() < config.freckles_probability else 0
    freckles = np.column_stack([features.normal(0, 0.09, count), features.normal(0, 0.05, count),
                                features.uniform(0.3, 1.0, count)])
    moles = np.column_stack([features.uniform(-0.2, 0.2, (m := features.integers(0, config.max_moles + 1), 2)),
                             features.uniform(1.5, 3.5, m)])
    glasses = (np.array([features.uniform(5, 45), features.uniform(2.5, 5.0), features.uniform(0.9, 1.25)])
               if features.uniform() < config.glasses_probability else None)
    return Look(
        skin_lab=skin.astype(np.float32), hair_lab=hair.astype(np.float32),
        hair_contrast=float(1.0 + 0.6 * max(0.0, hair[0] - 15.0) / 50.0),  # light hair shows its strands more
        beard=_uniform(rng, config.beard), clothing_lab=clothing.astype(np.float32),
        mirror_blend=_uniform(rng, config.mirror_blend), brightness=_uniform(rng, config.brightness),
        contrast=_uniform(rng, config.contrast),
        hairstyle=hairstyle, hairline_shift=features.uniform(0.25, 0.7), fringe_depth=features.uniform(0.3, 0.75),
        brow_density=_uniform(features, config.brow_density), brow_thickness=_uniform(features, config.brow_thickness),
        brow_arch=_uniform(features, config.brow_arch), lip_lab=lip.astype(np.float32),
        eye_shadow=float(features.uniform(5, 18)) if makeup else 0.0, age=age,
        freckles=freckles.astype(np.float32), moles=moles.astype(np.float32), glasses=glasses,
        detail_seed=int(features.integers(2**31)),
    )


def kelvin_tint(kelvin: float) -> np.ndarray:
    """RGB multiplier of a light of this colour temperature, normalised to unit luminance."""
    rgb = np.array([np.interp(kelvin, KELVIN, KELVIN_RGB[:, c]) for c in range(3)]) / 255.0
    return rgb / (rgb @ np.array([0.2126, 0.7152, 0.0722]))


def sample_light(config: FacesParams, rng: np.random.Generator) -> Light:
    """Ambient + one directional light within a cone about front-and-above, tinted by a colour temperature."""
    axis = np.array([0.0, 0.35, 1.0]) / np.linalg.norm([0.0, 0.35, 1.0])
    # Uniform direction on the spherical cap of half-angle light_cone_degrees about +z, then tilted onto `axis`.
    cos_max = np.cos(np.radians(config.light_cone_degrees))
    cos_theta = rng.uniform(cos_max, 1.0)
    phi = rng.uniform(0, 2 * np.pi)
    sin_theta = np.sqrt(1 - cos_theta**2)
    local = np.array([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta])
    tilt = np.arctan2(axis[1], axis[2])
    to_axis = np.array([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]])
    direction = to_axis @ local
    tint = kelvin_tint(_uniform(rng, config.colour_temperature_kelvin))
    ambient, diffuse = _uniform(rng, config.ambient), _uniform(rng, config.diffuse)
    # The ambient fill is half as tinted as the key light (sky and room light mix colours).
    return Light(ambient=tuple(float(v) for v in ambient * (0.5 + 0.5 * tint)),
                 diffuse=tuple(float(v) for v in diffuse * tint), direction=tuple(float(v) for v in direction))


def sample_background(config: FacesParams, rng: np.random.Generator) -> np.ndarray:
    """A solid colour, a linear gradient or smooth colour noise: backgrounds with no face-like structure."""
    size = config.image_size

    def colour() -> np.ndarray:
        hsv = np.array([[[rng.uniform(0, 180), 255 * _uniform(rng, config.background_saturation),
                          255 * _uniform(rng, config.background_value)]]], dtype=np.float32)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)

    kind = config.background_kinds[rng.integers(len(config.background_kinds))]
    first = colour()
    if kind == "solid":
        image = np.broadcast_to(first, (size, size, 3))
    elif kind == "gradient":
        second = colour()
        angle = rng.uniform(0, 2 * np.pi)
        grid = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / size
        t = np.clip(0.5 + np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None], 0, 1)[..., None]
        image = first * (1 - t) + second * t
    else:
        cells = rng.integers(2, 5)
        jitter = rng.normal(0, 25, (cells, cells, 3)).astype(np.float32)
        image = cv2.resize(first + jitter, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def sample_identity(config: FacesParams, identity: int, basis_names: list[str], attempt: int = 0) -> Identity:
    """All random choices of one identity, each from its own stream [seed, identity, purpose]; attempt > 0 redraws
    the shape (modes and local detail) and the light, from [seed, identity, purpose, attempt] (attempt 0 is the
    first draw)."""
    def rng(purpose: int) -> np.random.Generator:
        return np.random.default_rng([config.seed, identity, purpose])

    def redrawn(purpose: int) -> np.random.Generator:
        return rng(purpose) if attempt == 0 else np.random.default_rng([config.seed, identity, purpose, attempt])

    views = len(config.yaw_degrees)
    pose = rng(POSE)
    return Identity(
        identity=identity,
        shape=sample_shape(config, redrawn(SHAPE), basis_names),
        local_offsets=sample_local_offsets(config, redrawn(LOCAL)), local_radius_mm=config.local_radius_mm,
        look=sample_look(config, rng(LOOK)),
        light=sample_light(config, redrawn(LIGHT)),
        background=sample_background(config, rng(BACKGROUND)),
        yaw=np.asarray(config.yaw_degrees, dtype=np.float32),
        pitch=pose.uniform(-1, 1, views).astype(np.float32) * config.pitch_jitter_degrees,
        roll=pose.uniform(-1, 1, views).astype(np.float32) * config.roll_jitter_degrees,
    )


# --- albedo variation, rendering --------------------------------------------------------------------------------

def vary_albedo(albedo: np.ndarray, regions: Regions, look: Look) -> np.ndarray:
    """The identity's albedo: the template albedo re-toned in CIELAB on its soft regions (uint8, same size)."""
    size = albedo.shape[0]
    rgb = albedo.astype(np.float32) * np.float32(1 / 255)
    if look.mirror_blend > 0:
        rgb = (1 - look.mirror_blend) * rgb + look.mirror_blend * rgb[:, ::-1]  # u -> 1 - u mirrors the head
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)

    def blend(name: str, retone) -> None:
        """lab += weight * (retone(lab) - lab) inside the region's box."""
        box = regions.boxes[name]
        part, weight = lab[box], getattr(regions, name)[box][..., None]
        part += weight * (retone(part) - part)

    def clean_shave(part: np.ndarray) -> np.ndarray:
        # Towards clean skin (the skin's reference colour + a little fine detail) for beard < 1, denser above 1.
        clean = regions.skin_lab + 0.35 * (part - cv2.GaussianBlur(part, (0, 0), 6.0 * size / 512.0))
        return clean + look.beard * (part - clean)

    def skin_tone(part: np.ndarray) -> np.ndarray:
        # The skin's median becomes the target; L* is scaled (darker skin has darker detail too),
        # a* and b* are shifted (scaling them would turn the lips magenta).
        toned = part + (look.skin_lab - regions.skin_lab)
        toned[..., 0] = part[..., 0] * (look.skin_lab[0] / regions.skin_lab[0])
        return toned

    def hair_tone(part: np.ndarray) -> np.ndarray:
        # The target colour plus the strands' detail around the scan's hair colour.
        toned = look.hair_lab + 0.5 * (part - regions.hair_lab)
        toned[..., 0] = look.hair_lab[0] + look.hair_contrast * (part[..., 0] - regions.hair_lab[0])
        return toned

    def brow_tone(part: np.ndarray) -> np.ndarray:
        # Eyebrows change half as much as the hair did (fair-haired people have lighter brows), and
        # their lightness scales with the skin's (dark-skinned people have darker ones).
        toned = part + 0.5 * (look.hair_lab - regions.hair_lab)
        toned[..., 0] += part[..., 0] * (look.skin_lab[0] / regions.skin_lab[0] - 1.0)
        return toned

    def clothing_tone(part: np.ndarray) -> np.ndarray:
        toned = np.empty_like(part)
        toned[:] = look.clothing_lab
        toned[..., 0] += part[..., 0] - regions.clothing_lab[0]  # keep the folds' shading
        return toned

    blend("beard", clean_shave)
    blend("skin", skin_tone)
    blend("hair", hair_tone)
    blend("brows", brow_tone)
    blend("clothing", clothing_tone)
    paint_features(lab, regions, look)
    lab[..., 0] = np.clip(50.0 + look.contrast * (lab[..., 0] - 50.0) + 100.0 * look.brightness, 0, 100)
    return from_lab(lab)


def paint_features(lab: np.ndarray, regions: Regions, look: Look) -> None:
    """Hairstyle, eyebrows, lips, make-up, wrinkles, freckles, moles and glasses, painted into a CIELAB albedo in place.

    Every shape is drawn from the landmarks' UVs and the look's numbers in layout units, so the render
    albedo and the uv.size albedo show the same features at their own resolutions.
    """
    size = lab.shape[0]
    unit = size / 512.0
    points = regions.points * size - 0.5
    rows = np.arange(size, dtype=np.float32)[:, None]
    columns = np.arange(size, dtype=np.float32)[None, :]
    centre = points[27, 0]
    half_face = max(abs(points[0, 0] - centre), abs(points[16, 0] - centre))
    hairline, brow_row = regions.hairline * size, points[17:27, 1].mean()
    forehead = max(brow_row - hairline, 10.0 * unit)
    skin_target = look.skin_lab.astype(np.float32)

    def mix(weight: np.ndarray, target: np.ndarray | tuple) -> None:
        lab[...] += weight[..., None] * (np.asarray(target, np.float32) - lab)

    def strands() -> np.ndarray:
        noise = np.random.default_rng(look.detail_seed).standard_normal((128, 128)).astype(np.float32)
        noise = cv2.GaussianBlur(cv2.resize(noise, (size, size)), (0, 0), sigmaX=0.7 * unit, sigmaY=5.0 * unit)
        return noise / max(float(noise.std()), 1e-6)

    def hair_paint(weight: np.ndarray) -> None:
        target = np.broadcast_to(look.hair_lab, lab.shape).copy()
        target[..., 0] += 4.0 * look.hair_contrast * strands()
        lab[...] += weight[..., None] * (target - lab)

    if look.hairstyle in ("receding", "bald"):
        if look.hairstyle == "receding":
            # Temples recede further than the centre (the common M-shaped hairline).
            temples = 1.0 - 0.35 * np.exp(-0.5 * ((columns - centre) / (0.35 * half_face)) ** 2)
            cut = hairline - look.hairline_shift * forehead * temples
            bare = regions.hair * _sigmoid((rows - cut) / (3.0 * unit))
        else:  # only a rim of hair stays, round the sides and back below the level of the ears' tops
            rim = (_sigmoid((rows - points[0, 1] + 0.6 * forehead) / (4.0 * unit))
                   * _sigmoid((np.abs(columns - centre) / half_face - 0.8) / 0.05))
            bare = regions.hair * (1.0 - rim)
        bare = bare * _sigmoid((brow_row - rows) / (4.0 * unit))
        bald = skin_target.copy()
        bald[0] = min(100.0, bald[0] + 3.0)  # scalp skin sees less sun
        mix(bare, bald)
    if look.hairstyle == "fringe":
        window = _sigmoid((0.85 * half_face - np.abs(columns - centre)) / (6.0 * unit))
        reach = hairline + look.fringe_depth * forehead
        hair_paint(window * _sigmoid((reach - rows) / (2.5 * unit)) * _sigmoid((rows - hairline + 30 * unit) / (3 * unit)))
    if look.hairstyle == "long":
        hair_paint(regions.long_hair)

    # Eyebrows: the scan's fade (or darken) with the density; a painted brow of its own thickness and arch.
    density = look.brow_density
    if density < 1.0:
        mix(regions.brows * (1.0 - density), skin_target)
    brow_band = np.zeros((size, size), np.float32)
    for side in (points[17:22], points[22:27]):
        shape = np.linspace(-1.0, 1.0, len(side))
        arched = side - np.column_stack([np.zeros(len(side)), look.brow_arch * unit * (1.0 - shape**2)])
        cv2.polylines(brow_band, [np.round(arched * 4).astype(np.int32)], False, 1.0,
                      max(1, round(look.brow_thickness * unit)), cv2.LINE_AA, shift=2)
    brow_band = cv2.GaussianBlur(brow_band, (0, 0), 1.5 * unit)
    brow_colour = 0.5 * (look.hair_lab + skin_target)
    brow_colour[0] = min(float(look.hair_lab[0]), 0.5 * float(skin_target[0])) + 8.0
    mix(brow_band * min(1.0, 0.8 * density), brow_colour)

    lab[...] += regions.lips[..., None] * look.lip_lab
    lab[..., 0] -= look.eye_shadow * regions.eyelids

    lines = np.zeros((size, size), np.float32)
    wrinkle = float(np.clip((look.age - 0.3) / 0.7, 0.0, 1.0))
    if wrinkle > 0:
        width = max(1, round(1.5 * unit))
        for wing, corner, out in ((points[31], points[48], -1.0), (points[35], points[54], 1.0)):
            fold = np.stack([wing + [out * 4 * unit, -2 * unit], (wing + corner) / 2 + [out * 8 * unit, 0],
                             corner + [out * 6 * unit, 8 * unit]])
            cv2.polylines(lines, [np.round(fold * 4).astype(np.int32)], False, 1.0, width, cv2.LINE_AA, shift=2)
        for k in range(3):  # forehead lines
            row = brow_row - (0.25 + 0.18 * k) * forehead
            xs = np.linspace(centre - 0.5 * half_face, centre + 0.5 * half_face, 9)
            curve = np.column_stack([xs, row + 3 * unit * ((xs - centre) / (0.5 * half_face)) ** 2])
            cv2.polylines(lines, [np.round(curve * 4).astype(np.int32)], False, 0.7, width, cv2.LINE_AA, shift=2)
        for eye, out in ((points[36], -1.0), (points[45], 1.0)):  # crow's feet
            for slope in (-0.4, 0.0, 0.4):
                end = eye + np.array([out * 10 * unit, slope * 10 * unit])
                cv2.line(lines, tuple(np.round((eye + [out * 3 * unit, 0]) * 4).astype(int)),
                         tuple(np.round(end * 4).astype(int)), 0.6, width, cv2.LINE_AA, shift=2)
        lab[..., 0] -= 9.0 * wrinkle * cv2.GaussianBlur(lines, (0, 0), 1.0 * unit) * regions.skin

    spots = np.zeros((size, size), np.float32)
    nose_tip = points[30]
    for du, dv, strength in look.freckles:
        cv2.circle(spots, tuple(np.round((nose_tip + [du * size, dv * size]) * 4).astype(int)),
                   max(1, round(4 * 1.2 * unit)), float(strength), -1, cv2.LINE_AA, shift=2)
    spots = cv2.GaussianBlur(spots, (0, 0), 0.6 * unit) * regions.skin
    lab[..., 0] -= 12.0 * spots
    lab[..., 2] += 5.0 * spots
    for du, dv, radius in look.moles:
        mole = np.zeros((size, size), np.float32)
        cv2.circle(mole, tuple(np.round((nose_tip + [du * size, dv * size]) * 4).astype(int)),
                   max(1, round(4 * radius * unit)), 1.0, -1, cv2.LINE_AA, shift=2)
        mix(cv2.GaussianBlur(mole, (0, 0), 0.5 * unit) * regions.skin, (0.45 * skin_target[0], 12.0, 16.0))

    if look.glasses is not None:
        lightness, thickness, lens = look.glasses
        frame = np.zeros((size, size), np.float32)
        width = max(1, round(thickness * unit))
        rims = []
        for eye in (points[36:42], points[42:48]):
            middle = eye.mean(0)
            axes = np.array([0.75, 0.5]) * lens * (eye[:, 0].max() - eye[:, 0].min())
            cv2.ellipse(frame, tuple(np.round(middle * 4).astype(int)), tuple(np.round(axes * 4).astype(int)),
                        0, 0, 360, 1.0, width, cv2.LINE_AA, shift=2)
            rims.append((middle, axes))
        (left, left_axes), (right, right_axes) = sorted(rims, key=lambda rim: rim[0][0])
        bridge = [left + [left_axes[0], -0.3 * left_axes[1]], right - [right_axes[0], 0.3 * right_axes[1]]]
        temples = [(left - [left_axes[0], 0.2 * left_axes[1]], [points[0, 0] - 4 * unit, left[1] - 4 * unit]),
                   (right + [right_axes[0], -0.2 * right_axes[1]], [points[16, 0] + 4 * unit, right[1] - 4 * unit])]
        for start, end in [bridge, *temples]:
            cv2.line(frame, tuple(np.round(np.asarray(start) * 4).astype(int)),
                     tuple(np.round(np.asarray(end) * 4).astype(int)), 1.0, width, cv2.LINE_AA, shift=2)
        mix(np.clip(frame, 0.0, 1.0), (lightness, 0.0, 0.0))


@dataclass
class RenderedIdentity:
    """One identity's views and ground truth, in the shard layout of data/faces (docs/DATA.md)."""

    images: np.ndarray  # V,S,S,3 uint8
    yaw: np.ndarray  # V float32 degrees
    pitch: np.ndarray
    roll: np.ndarray
    landmarks: np.ndarray  # V,68,2 float32 (x, y) pixels
    lit_texture: np.ndarray  # U,U,3 uint8
    shape: np.ndarray  # K float32


def identity_textures(template: Template, render_regions: Regions, uv_regions: Regions,
                      identity: Identity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shaped vertices, lit texture at the render resolution, lit texture at uv.size = the ground truth)."""
    vertices = identity_vertices(template, identity)
    textures = []
    for albedo, regions, triangle, barycentrics in (
        (template.albedo_render, render_regions, template.render_texel_triangle, template.render_texel_barycentrics),
        (template.albedo, uv_regions, template.texel_triangle, template.texel_barycentrics),
    ):
        albedo = vary_albedo(albedo, regions, identity.look)
        if identity.face is not None:
            albedo = identity.face.over(albedo)
        textures.append(lit_texture(albedo, vertices, template.faces, triangle, barycentrics, identity.light))
    return vertices, textures[0], textures[1]


def render_identity(template: Template, render_regions: Regions, uv_regions: Regions, identity: Identity,
                    image_size: int, supersample: int = 2) -> RenderedIdentity:
    """Render every view of one identity and its ground truth (lit UV texture, pose, projected landmarks)."""
    vertices, render_texture, truth = identity_textures(template, render_regions, uv_regions, identity)
    scale, translation = default_camera(image_size)
    images, landmarks = [], []
    for yaw, pitch, roll in zip(identity.yaw, identity.pitch, identity.roll):
        screen = project(vertices, rotation_matrix(float(yaw), float(pitch), float(roll)), scale, translation)
        # Back faces are culled: the camera stays within +-90 degrees of the face, where the head
        # hides its own inside (measured: < 0.1 % of pixels change at yaw 50).
        image, _ = render_textured(screen, template.faces, template.vertex_uv, render_texture, image_size,
                                   identity.background, supersample, cull_back_faces=True)
        images.append(image)
        landmarks.append(screen[template.landmark_ids, :2])
    return RenderedIdentity(
        images=np.stack(images), yaw=identity.yaw, pitch=identity.pitch, roll=identity.roll,
        landmarks=np.stack(landmarks).astype(np.float32), lit_texture=truth, shape=identity.shape,
    )


# --- a face taken from a generated person (source `generated`) ---------------------------------------------------

PERSON_MAX_VIEW_ANGLE = 70.0  # texels seen more obliquely than this are not sampled (pafs.max_view_angle_degrees)
PERSON_DEPTH_TOLERANCE_MM = 3.0
# How much of the albedo the person's face replaces: texels seen within 45 degrees fully, fading out by 66 degrees.
PERSON_COSINE = (0.4, 0.7)
PERSON_FOREHEAD_EXTRA = 60.0  # the face region reaches this far above the scan's hairline (texels of a 512 layout)
# The person's face carries its own shading; a strong directional light on top of it shades every face by the same
# template shape, and dlib then finds people more alike (32 identities, frontal: 86 % of pairs different at the
# full light, 92.5 % with a quarter of the diffuse light, the rest moved into the ambient: docs/RESULTS.md).
PERSON_DIFFUSE_SHARE = 0.25
PERSON_CORRECTION = dict(correction=True, correction_threshold=0.1)  # the fit follows the person's landmarks closely


@dataclass
class PersonFace:
    """The face of one generated person in the UV layout at the render resolution: where it replaces the albedo."""

    texture: np.ndarray  # R,R,3 uint8: sampled where seen, mirrored across the face where only the other side was
    weight: np.ndarray  # R,R float32 in [0, 1]: share of the albedo it replaces (the face and forehead, feathered)
    skin_lab: np.ndarray  # 3: median CIELAB of its skin (the rest of the head is toned to it)
    hair_lab: np.ndarray  # 3: median CIELAB of its hair above the forehead
    yaw: float  # the person's fitted yaw, degrees

    def over(self, albedo: np.ndarray) -> np.ndarray:
        """The face laid over an albedo of any layout size (area-resized to it)."""
        size = albedo.shape[0]
        texture, weight = self.texture, self.weight
        if texture.shape[0] != size:
            texture = cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA)
            weight = cv2.resize(weight, (size, size), interpolation=cv2.INTER_AREA)
        mixed = albedo.astype(np.float32) + weight[..., None] * (texture.astype(np.float32) - albedo)
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def face_region(regions: Regions, size: int) -> np.ndarray:
    """The face and forehead in the UV layout (R,R float32, soft): inside the jaw outline, up to the scan's
    hairline and a little beyond it (generated fringes and hairlines come with the face)."""
    unit = size / 512.0
    points = regions.points * size - 0.5
    top = regions.hairline * size - PERSON_FOREHEAD_EXTRA * unit
    lifted = np.vstack([points[:17], points[17:27] * [1.0, 0.0] + [0.0, top]])
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(cv2.convexHull(lifted.astype(np.float32))).astype(np.int32), 1)
    mask = cv2.erode(mask, np.ones((2 * round(6 * unit) + 1,) * 2, np.uint8))
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 6.0 * unit)


def person_face(texture: np.ndarray, cosine: np.ndarray, regions: Regions, yaw: float) -> PersonFace:
    """The person's face from its partial texture at the render resolution (R,R,3 uint8, the cosine of each texel's
    view angle R,R float in [0, 1], 0 = unseen) and the template's render-resolution regions."""
    size = texture.shape[0]
    low, high = PERSON_COSINE
    seen = np.clip((cosine - low) / (high - low), 0.0, 1.0).astype(np.float32)
    seen = seen * seen * (3.0 - 2.0 * seen)  # smoothstep: no visible step where the sampling stops
    colour = texture.astype(np.float32)
    # A turned person shows one side of the face better: the other side takes the mirrored texels (u -> 1 - u).
    mirrored_seen, mirrored = seen[:, ::-1], colour[:, ::-1]
    fill = (1.0 - seen) * mirrored_seen
    weight = seen + fill
    colour = (seen[..., None] * colour + fill[..., None] * mirrored) / np.maximum(weight, 1e-6)[..., None]
    face = face_region(regions, size)
    lab = to_lab(np.clip(colour + 0.5, 0, 255).astype(np.uint8))
    skin = (regions.skin > 0.8) & (face > 0.9) & (weight > 0.9) & (regions.beard < 0.5)
    hair = (regions.hair > 0.5) & (seen > 0.5)
    skin_lab = np.median(lab[skin], axis=0) if skin.sum() > 50 else regions.skin_lab
    hair_lab = np.median(lab[hair], axis=0) if hair.sum() > 50 else regions.hair_lab
    return PersonFace(texture=np.clip(colour + 0.5, 0, 255).astype(np.uint8), weight=(face * weight).astype(np.float32),
                      skin_lab=skin_lab.astype(np.float32), hair_lab=hair_lab.astype(np.float32), yaw=float(yaw))


def person_from_fit(template: Template, regions: Regions, image: np.ndarray, fit: Fit) -> tuple[Fit, PersonFace]:
    """(shape coefficients, face) of a generated person from the template's fit to it (fitting.image_fit: the
    library pafs and reconstruct fit with; one frontal view determines little depth, the regularisation keeps the
    unseen modes near the mean): its texture sampled through the fit at the render resolution."""
    render_layout = dataclasses.replace(template, texel_triangle=template.render_texel_triangle,
                                        texel_barycentrics=template.render_texel_barycentrics)
    texture, _, cosine = partial_texture(image, render_layout, fit, PERSON_MAX_VIEW_ANGLE, PERSON_DEPTH_TOLERANCE_MM)
    face = person_face(texture, cosine.astype(np.float32) / 255.0, regions, float(fit.pose[0]))
    return fit, face


def with_person(identity: Identity, fit: Fit, face: PersonFace) -> Identity:
    """The identity with a generated person's face and fitted shape (modes and correction); the rest of the head
    toned to its skin and hair (the painted features that the face now carries itself are left out)."""
    look = dataclasses.replace(identity.look, skin_lab=face.skin_lab, hair_lab=face.hair_lab, glasses=None, moles=
                               identity.look.moles[:0], freckles=identity.look.freckles[:0], eye_shadow=0.0,
                               mirror_blend=0.0, brightness=0.0, contrast=1.0, beard=0.0, hairstyle="short")
    light = identity.light
    # Of the diffuse light taken away, 0.8 (a frontal face's mean cosine within the light cone) goes to the ambient.
    light = Light(ambient=tuple(a + (1.0 - PERSON_DIFFUSE_SHARE) * 0.8 * d for a, d in zip(light.ambient, light.diffuse)),
                  diffuse=tuple(PERSON_DIFFUSE_SHARE * d for d in light.diffuse), direction=light.direction)
    return dataclasses.replace(identity, shape=fit.shape.astype(np.float32), look=look, face=face, light=light,
                               local_offsets=np.zeros_like(identity.local_offsets), vertex_offsets=fit.offsets)


# --- previews -------------------------------------------------------------------------------------------------

def preview_grid(rows: list[np.ndarray], tile: int, first_column: list[np.ndarray] | None = None) -> np.ndarray:
    """One row per identity: its views (V,S,S,3, V may vary) as tile x tile thumbnails, optionally led by another image."""
    columns = max(len(views) for views in rows) + (first_column is not None)
    grid = np.full((len(rows) * tile, columns * tile, 3), 255, np.uint8)
    for r, views in enumerate(rows):
        images = ([first_column[r]] if first_column is not None else []) + list(views)
        for c, image in enumerate(images):
            grid[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    return grid
