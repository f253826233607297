import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headtex.detection import detect_faces, find_face
from headtex.geometry import interpolate
from headtex.geometry.template import render_view
from headtex.template.files import read_sdist

REPO = Path(__file__).resolve().parents[1]


def test_template_files_and_metrics(template_dir):
    for name in ("template.npz", "template.json", "albedo.png", "albedo_render.png", "head.obj", "preview.png"):
        assert (template_dir / name).is_file(), name
    import json

    metrics = json.loads((template_dir.parent / "template.json").read_text())
    assert {"vertices", "triangles", "uv_coverage"} <= set(metrics)
    assert not {"render_256_seconds_median", "build_seconds"} & set(metrics)  # timings: metrics/timing/ only
    assert 0.7 < metrics["uv_coverage"] < 1.0


def test_mesh_is_normalised(template):
    v = template.vertices
    ids = template.landmark_ids
    nose_tip, eyes, mouth, chin = v[ids[30]], v[ids[36:48]].mean(0), v[ids[48:68]].mean(0), v[ids[8]]
    assert abs(eyes[0]) < 3 and abs(mouth[0]) < 5  # centred on the symmetry plane
    assert nose_tip[2] == v[ids, 2].max()  # the nose tip is the frontmost landmark: frontal = +z
    assert eyes[1] > nose_tip[1] > mouth[1] > chin[1]  # up = +y
    assert v[ids[45], 0] > 0 > v[ids[36], 0]  # x points to the subject's left
    inter_ocular = np.linalg.norm(v[ids[45]] - v[ids[36]])
    assert 80 < inter_ocular < 110  # metric scale (mm): adult outer eye corners ~ 90-100 mm


def test_uv_layout_is_a_bijection_on_valid_texels(template):
    size = template.albedo.shape[0]
    valid = template.texel_valid
    # Every valid texel maps back to its own centre through its owning triangle.
    uv = interpolate(template.vertex_uv, template.faces, template.texel_triangle, template.texel_barycentrics)
    rows, cols = np.nonzero(valid)
    centres = np.stack([(cols + 0.5) / size, (rows + 0.5) / size], 1)
    np.testing.assert_allclose(uv[valid], centres, atol=1e-4)
    # No two triangles claim a texel: the triangles' UV areas add up to the valid area (no folds).
    corners = template.vertex_uv[template.faces] * size
    edges1, edges2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    uv_area = 0.5 * np.abs(edges1[:, 0] * edges2[:, 1] - edges1[:, 1] * edges2[:, 0]).sum()
    assert uv_area / valid.sum() < 1.05


def test_uv_layout_thirds(template):
    uv = template.vertex_uv[template.landmark_ids]
    assert 1 / 3 < uv[30, 0] < 2 / 3  # nose in the middle third
    assert uv[0, 0] < 0.5 < uv[16, 0]  # jaw sides either side of the centre
    assert uv[27, 1] < uv[8, 1]  # v points down: nose bridge above the chin


def test_shape_basis_is_smooth_and_named(template):
    assert len(template.basis_names) == template.basis.shape[0] >= 10
    assert len(set(template.basis_names)) == len(template.basis_names)
    for name, mode in zip(template.basis_names, template.basis):
        magnitude = np.linalg.norm(mode, axis=1)
        assert 1.0 < magnitude.max() < 15.0, name  # a unit coefficient moves a few mm
        # Smooth: neighbouring vertices move alike (edge differences small next to the motion).
        edge_change = np.linalg.norm(mode[template.faces[:, 0]] - mode[template.faces[:, 1]], axis=1)
        assert np.percentile(edge_change, 99) < 0.35 * magnitude.max(), name
    shaped = template.shaped(np.eye(len(template.basis_names))[template.basis_names.index("nose_depth")])
    nose = template.landmark_ids[30]
    assert shaped[nose, 2] > template.vertices[nose, 2] + 3


def test_frontal_render_is_left_right_symmetric(template):
    _, screen = render_view(template, template.vertices, template.albedo_render, 0.0, 128)
    from headtex.geometry import rasterize

    silhouette = rasterize(screen, template.faces, 128, 128)[0] >= 0
    centre = int(round(screen[template.landmark_ids[27], 0]))
    half = min(centre, 127 - centre)
    left = silhouette[:, centre - half:centre]
    right = silhouette[:, centre + 1:centre + 1 + half][:, ::-1]
    iou = (left & right).sum() / (left | right).sum()
    assert iou > 0.9


@pytest.mark.parametrize("yaw", [-35.0, 0.0, 35.0])
def test_dlib_finds_exactly_one_face_in_renders(template, yaw):
    image, screen = render_view(template, template.vertices, template.albedo_render, yaw, 256)
    assert len(detect_faces(image, "hog", 1)) == 1
    detection = find_face(image, [("hog", 1)])
    inner = np.linalg.norm(detection.landmarks[17:] - screen[template.landmark_ids[17:], :2], axis=1)
    assert np.median(inner) < 8.0  # the ibug mapping of the scan's landmarks is right


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "headtex", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_no_network_and_no_source_says_how_to_supply_the_sdist(tmp_path):
    import os

    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_CONFIG_FILE=os.devnull)
    out = tmp_path / "models" / "template"
    result = run_cli("template", "--params", str(REPO / "params.yaml"), "--out", str(out),
                     "--metrics", str(tmp_path / "m.json"), env=env)
    assert result.returncode == 1
    assert "--source" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_corrupt_sdist_is_a_clear_error_and_writes_nothing(tmp_path):
    corrupt = tmp_path / "menpo3d-0.8.6.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08 this is not a tarball")
    out = tmp_path / "models" / "template"
    result = run_cli("template", "--params", str(REPO / "params.yaml"), "--source", str(corrupt), "--out", str(out),
                     "--metrics", str(tmp_path / "m.json"))
    assert result.returncode == 1
    assert "corrupt" in result.stderr and str(corrupt) in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not list(out.parent.glob(".*")) if out.parent.exists() else True


def test_sdist_without_the_scan_is_rejected(tmp_path):
    import tarfile

    bogus = tmp_path / "other.tar.gz"
    with tarfile.open(bogus, "w:gz") as archive:
        readme = tmp_path / "README"
        readme.write_text("hello")
        archive.add(readme, arcname="pkg/README")
    from headtex.io import UserError

    with pytest.raises(UserError, match="missing james.obj"):
        read_sdist(bogus)
