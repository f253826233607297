"""A face generator that ships in a package: MobileStyleGAN (distilled from NVIDIA's StyleGAN2-FFHQ) as OpenVINO IR.

The IR files come from the `random-face==2021.7.21.1` wheel (`random_face/data/`): the wheel is fetched with pip
(or given), sha256-checked, and its four IR files are extracted; the package itself is never installed or imported
(its code calls an OpenVINO API that no longer exists and its requirements pull opencv-python, gdown and jupyter).
z (N,512) ~ N(0, 1) -> MappingNetwork -> style (N,512) -> SynthesisNetwork -> RGB (N,3,1024,1024) in [-1, 1].
Weights: derived from NVIDIA's StyleGAN2-FFHQ, non-commercial research use only (README "Licences").
"""
from __future__ import annotations

import hashlib
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.io import UserError, load_npz, pip_download

WHEEL = "random-face==2021.7.21.1"
WHEEL_NAME = "random_face-2021.7.21.1-py3-none-any.whl"
WHEEL_SHA256 = "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5"
IR_FILES = ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin")
STYLE_SIZE = 512
OUTPUT_SIZE = 1024
MEAN_FILE = "mean_style.npy"  # the stylegan stage's outputs beside the IR files (models/stylegan/)
POSE_FILE = "pose.npz"
HOW_TO_SUPPLY = (f"download it on a connected machine with `pip download --no-deps {WHEEL}` and pass its path "
                 "(params.yaml generator.source, or `headtex generator --source WHEEL`)")


def download_wheel(folder: Path) -> Path:
    """Fetch the random-face wheel with pip into `folder` (no dependencies, nothing installed)."""
    return pip_download(WHEEL, folder, WHEEL_NAME, ("--only-binary", ":all:"), HOW_TO_SUPPLY)


def extract_ir(wheel: Path, folder: Path) -> None:
    """Check the wheel's sha256 and write its four IR files into folder."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise UserError(f"{wheel}: no such file; {HOW_TO_SUPPLY}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise UserError(f"{wheel}: sha256 {digest[:12]}... is not {WHEEL}'s ({WHEEL_SHA256[:12]}...); {HOW_TO_SUPPLY}")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in IR_FILES:
            (folder / name).write_bytes(archive.read(f"random_face/data/{name}"))


def fetch_ir(folder: Path, wheel: Path | None = None) -> Path:
    """The IR files in folder, extracted from `wheel` (None: downloaded with pip) unless already there."""
    folder = Path(folder)
    if all((folder / name).is_file() for name in IR_FILES):
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        extract_ir(wheel or download_wheel(Path(scratch)), folder)
    return folder


class Generator:
    """MappingNetwork and SynthesisNetwork compiled for the CPU, any batch size.

    threads: OpenVINO's inference threads. Results are repeatable for one thread count and batch size on one
    machine; the stages generate one identity per call with one thread, so worker counts never change a byte.
    """

    def __init__(self, folder: Path, threads: int = 1):
        try:
            import openvino as ov
        except ImportError:
            raise UserError("the OpenVINO runtime is not installed (`make install` installs the lock, which holds "
                            "openvino); the generator cannot run") from None
        folder = Path(folder)
        missing = [name for name in IR_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder}: missing the generator's IR files {', '.join(missing)} "
                            "(`dvc repro generator` fetches them)")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        compiled = []
        for name in ("MappingNetwork", "SynthesisNetwork"):
            model = core.read_model(str(folder / f"{name}.xml"), str(folder / f"{name}.bin"))
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([-1, STYLE_SIZE])})
            compiled.append(core.compile_model(model, "CPU", config))
        self._mapping, self._synthesis = compiled

    @staticmethod
    def _infer(compiled: object, inputs: np.ndarray) -> np.ndarray:
        # A request per call: a Dask worker runs tasks in threads that share this process' compiled models.
        request = compiled.create_infer_request()
        request.infer([np.ascontiguousarray(inputs, np.float32)])
        return np.array(request.get_output_tensor(0).data, np.float32)

    def styles(self, z: np.ndarray) -> np.ndarray:
        """(N,512) latents -> (N,512) styles."""
        return self._infer(self._mapping, z)

    def images(self, styles: np.ndarray, size: int = OUTPUT_SIZE) -> np.ndarray:
        """(N,512) styles -> (N,size,size,3) uint8 RGB, area-averaged down from 1024 px."""
        raw = self._infer(self._synthesis, styles)
        rgb = np.clip((raw.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        if size == OUTPUT_SIZE:
            return rgb
        return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in rgb])


def latent(seed: int, identity: int, *purpose: int) -> np.ndarray:
    """One identity's z (512,) from np.random.default_rng([seed, identity, *purpose])."""
    return np.random.default_rng([seed, identity, *purpose]).standard_normal(STYLE_SIZE).astype(np.float32)


def mean_style(generator: Generator, samples: int, seed: int, batch: int = 256) -> np.ndarray:
    """The mean style (512,) over `samples` latents (StyleGAN's truncation centre), in fixed batches."""
    rng = np.random.default_rng([seed, samples])
    total = np.zeros(STYLE_SIZE, np.float64)
    for start in range(0, samples, batch):
        z = rng.standard_normal((min(batch, samples - start), STYLE_SIZE)).astype(np.float32)
        total += generator.styles(z).sum(axis=0, dtype=np.float64)
    return (total / samples).astype(np.float32)


def truncate(styles: np.ndarray, mean: np.ndarray, truncation: float) -> np.ndarray:
    """Styles pulled towards the mean: mean + truncation * (style - mean) (1 = none; smaller = more typical faces)."""
    return (mean + np.float32(truncation) * (np.asarray(styles, np.float32) - mean)).astype(np.float32)


@dataclass
class PoseDirection:
    """A yaw direction in style space (the stylegan stage fits it):
    yaw(style) ~ intercept + degrees_per_unit * ((style - mean) . direction)."""

    direction: np.ndarray  # 512 float32, unit length
    degrees_per_unit: float  # predicted yaw change per unit step along direction
    intercept: float
    sigma: float  # std of the pose samples' styles along direction (steps are given in these units)
    r2: float  # in-sample
    r2_cv: float  # cross-validated

    def arrays(self) -> dict[str, np.ndarray]:
        return {"direction": self.direction.astype(np.float32),
                **{k: np.float64(getattr(self, k)) for k in ("degrees_per_unit", "intercept", "sigma", "r2", "r2_cv")}}

    def yaw(self, styles: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Predicted yaw (degrees) of styles (N,512)."""
        return self.intercept + self.degrees_per_unit * ((np.asarray(styles) - mean) @ self.direction)


def check_stylegan_folder(folder: Path) -> None:
    """One line when the stylegan stage's folder lacks a file (before any work starts)."""
    missing = [name for name in (*IR_FILES, MEAN_FILE, POSE_FILE) if not (Path(folder) / name).is_file()]
    if missing:
        raise UserError(f"{folder}: not the stylegan stage's folder (missing {', '.join(missing)}); run "
                        "`dvc repro stylegan` (or `headtex stylegan`) first")


def load_stylegan(folder: Path, threads: int = 1) -> tuple[Generator, np.ndarray, PoseDirection]:
    """The generator, its mean style and its yaw direction from the stylegan stage's folder."""
    check_stylegan_folder(folder)
    generator = Generator(folder, threads)
    mean = np.load(Path(folder) / MEAN_FILE, allow_pickle=False)
    arrays = load_npz(Path(folder) / POSE_FILE)
    pose = PoseDirection(np.asarray(arrays["direction"], np.float32),
                         *(float(arrays[k]) for k in ("degrees_per_unit", "intercept", "sigma", "r2", "r2_cv")))
    return generator, mean, pose
