"""The shipped face generator (MobileStyleGAN IR from the random-face wheel), run for real on a few samples."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from headtex.generator import IR_FILES, STYLE_SIZE, Generator, extract_ir, latent, mean_style, truncate
from headtex.identity import SAME_PERSON, face_descriptor
from headtex.io import UserError


@pytest.fixture(scope="module")
def generator(generator_ir) -> Generator:
    return Generator(generator_ir)


def test_seeded_latents_are_repeatable_and_per_identity():
    assert np.array_equal(latent(0, 3), latent(0, 3))
    assert not np.array_equal(latent(0, 3), latent(0, 4))
    assert not np.array_equal(latent(0, 3), latent(1, 3))
    assert latent(0, 3).shape == (STYLE_SIZE,) and latent(0, 3).dtype == np.float32


def test_generated_people_are_faces_different_people_and_repeatable(generator):
    z = np.stack([latent(0, i) for i in range(2)])
    images = generator.images(generator.styles(z), 256)
    assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8
    assert 40 < images.mean() < 220 and images.std() > 20
    one_by_one = np.concatenate([generator.images(generator.styles(z[i:i + 1]), 256) for i in range(2)])
    assert np.array_equal(images, one_by_one)  # batching changes no byte
    first, second = (face_descriptor(image) for image in images)
    assert first is not None and second is not None  # dlib finds a face in each
    assert np.linalg.norm(first - second) >= SAME_PERSON  # two identities, two people


def test_truncation_pulls_towards_the_mean_face(generator):
    mean = mean_style(generator, 64, seed=0)
    assert mean.shape == (STYLE_SIZE,)
    assert np.array_equal(mean, mean_style(generator, 64, seed=0))
    style = generator.styles(latent(0, 5)[None])
    assert np.allclose(truncate(style, mean, 1.0), style, atol=1e-6)
    assert np.allclose(truncate(style, mean, 0.0), mean)
    half = truncate(style, mean, 0.5)
    assert np.allclose(np.linalg.norm(half - mean), 0.5 * np.linalg.norm(style - mean), rtol=1e-4)


def test_missing_files_and_a_wrong_wheel_are_one_line(tmp_path):
    with pytest.raises(UserError, match="missing the generator's IR files"):
        Generator(tmp_path)
    fake = tmp_path / "random_face-2021.7.21.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        for name in IR_FILES:
            archive.writestr(f"random_face/data/{name}", b"not a model")
    with pytest.raises(UserError, match="sha256"):
        extract_ir(fake, tmp_path / "ir")
    with pytest.raises(UserError, match="no such file"):
        extract_ir(tmp_path / "absent.whl", tmp_path / "ir")
