"""The stylegan stage: the generator's files fetched from the wheel, its mean style and a yaw direction it finds."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from headtex.fitting import image_fit
from headtex.generator import IR_FILES, MEAN_FILE, POSE_FILE, latent, load_stylegan, truncate
from headtex.stylegan.core import fit_pose_direction


def test_the_stage_writes_the_generator_its_mean_style_and_a_yaw_direction(stylegan_dir):
    for name in (*IR_FILES, MEAN_FILE, POSE_FILE, "preview.png"):
        assert (stylegan_dir / name).is_file(), name
    metrics = json.loads((stylegan_dir.parent / "stylegan.json").read_text())
    assert metrics["faces_found"] >= 0.9 * metrics["pose_samples"]
    assert metrics["r2_cross_validated"] > 0.3  # yaw is (roughly) linear in the style
    _, _, pose = load_stylegan(stylegan_dir)
    assert abs(np.linalg.norm(pose.direction) - 1.0) < 1e-5 and pose.sigma > 0


def test_stepping_along_the_direction_turns_a_new_face(stylegan_dir, template):
    generator, mean, pose = load_stylegan(stylegan_dir)
    style = truncate(generator.styles(latent(7, 1234)[None]), mean, 0.7)[0]  # a person the fit never saw
    steps = np.array([-3.0, 0.0, 3.0])[:, None] * pose.sigma * pose.direction
    images = generator.images(style + steps.astype(np.float32), 256)
    yaws = [image_fit(template, image)[0].pose[0] for image in images]
    assert yaws[0] < yaws[1] < yaws[2] and yaws[2] - yaws[0] > 15.0


def test_ridge_regression_finds_a_planted_direction():
    rng = np.random.default_rng(0)
    styles = rng.standard_normal((1500, 512)).astype(np.float32)  # more people than style dimensions
    truth = np.zeros(512)
    truth[3] = 1.0
    yaws = 10.0 * styles[:, 3] + 2.0 + 0.1 * rng.standard_normal(1500)
    pose = fit_pose_direction(styles, np.zeros(512, np.float32), yaws, ridge=0.01, seed=0)
    assert float(pose.direction @ truth) > 0.9 and pose.r2 > 0.95 and pose.r2_cv > 0.9
    assert abs(pose.degrees_per_unit * float(pose.direction @ truth) - 10.0) < 2.0


def test_a_wrong_wheel_is_one_line(tmp_path):
    fake = tmp_path / "random_face-2021.7.21.1-py3-none-any.whl"
    fake.write_bytes(b"not a wheel")
    result = subprocess.run([sys.executable, "-m", "headtex", "stylegan", "--source", str(fake), "--out",
                             str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "sha256" in result.stderr
    assert not (tmp_path / "out").exists()
