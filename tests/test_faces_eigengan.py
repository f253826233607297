"""The eigengan faces source: the port's checkpoint layout, its forward pass, the pose traversal, the shards,
the dlib identity filter, and the path through faces -> pafs -> blend on random weights."""
import argparse
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headtex.datasets import FACES, iter_shards, read_index
from headtex.faces import cli as faces_cli, eigengan
from headtex.faces.cli import run
from headtex.io import UserError
from conftest import write_params_file


# bryandlee/eigengan-pytorch, model.py, Generator(size=256, n_basis=6, noise_dim=512, base_channels=16,
# max_channels=512) (train.py's defaults, which the FFHQ release was trained with): fc = Linear(512, 4*4*512);
# block i (side 4*2^i, channels get_channels(i) -> get_channels(i+1), get_channels(i) = min(512, 16*2^(6-i)));
# to_rgb = Sequential(ConvLayer(16, 3, 7, pre_activate=True), Tanh()).
PORT_256_BLOCKS = [(4, 512, 512), (8, 512, 256), (16, 256, 128), (32, 128, 64), (64, 64, 32), (128, 32, 16)]


def port_keys(blocks: list[tuple[int, int, int]], n_basis: int, noise_dim: int, base: int) -> dict[str, tuple]:
    """The port's Generator.state_dict() keys and shapes, written from its model.py (nn.ConvTranspose2d weights
    are (in, out, k, k); a ConvLayer is a Sequential: conv first, or [LeakyReLU, conv] when pre-activated)."""
    first = blocks[0][1]
    keys = {"fc.weight": (16 * first, noise_dim), "fc.bias": (16 * first,)}
    for i, (side, cin, cout) in enumerate(blocks):
        keys |= {f"blocks.{i}.projection.U": (n_basis, side * side * cin), f"blocks.{i}.projection.L": (n_basis,),
                 f"blocks.{i}.projection.mu": (side * side * cin,),
                 f"blocks.{i}.subspace_conv1.0.weight": (cin, cin, 1, 1), f"blocks.{i}.subspace_conv1.0.bias": (cin,),
                 f"blocks.{i}.subspace_conv2.0.weight": (cin, cout, 3, 3), f"blocks.{i}.subspace_conv2.0.bias": (cout,),
                 f"blocks.{i}.feature_conv1.1.weight": (cin, cout, 3, 3), f"blocks.{i}.feature_conv1.1.bias": (cout,),
                 f"blocks.{i}.feature_conv2.1.weight": (cout, cout, 3, 3), f"blocks.{i}.feature_conv2.1.bias": (cout,)}
    return keys | {"to_rgb.0.1.weight": (3, base, 7, 7), "to_rgb.0.1.bias": (3,)}


# A tiny generator of the same family: size 32 (3 blocks), channels min(16, 4*2^(3-i)) = 16, 16, 8, 4.
TINY = dict(size=32, n_basis=3, noise_dim=8, base_channels=4, max_channels=16)
TINY_BLOCKS = [(4, 16, 16), (8, 16, 8), (16, 8, 4)]


def random_state(keys: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the port's names, as its training would leave them (L decreasing like its init)."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: 0.3 * torch.randn(shape, generator=generator) for key, shape in keys.items()}
    for key in state:
        if key.endswith("projection.L"):
            state[key] = torch.tensor([3.0 * i for i in range(len(state[key]), 0, -1)])
    return state


def save_port_checkpoint(path: Path, state: dict, **args) -> Path:
    """What the port's train.py writes: step, its argparse args, g, d, g_ema, the optimisers' states and (with
    --fid) the FID, a numpy float."""
    namespace = argparse.Namespace(name="test", size=32, batch=16, lr=1e-4, **{k: v for k, v in TINY.items() if k != "size"})
    vars(namespace).update(args)
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], betas=(0.5, 0.99)).state_dict()
    torch.save({"step": 10000, "args": namespace, "g": state, "d": {"classifier.1.bias": torch.zeros(1)},
                "g_ema": state, "g_optim": adam, "d_optim": adam, "fid": np.float64(31.4)}, path)
    return path


def port_forward(state: dict, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The port's Generator.forward on raw tensors (functional, independent of headtex's module)."""
    h = F.linear(e, state["fc.weight"], state["fc.bias"]).view(len(e), -1, 4, 4)
    for i in range(z.shape[1]):
        p = f"blocks.{i}."
        phi = ((state[p + "projection.L"] * z[:, i]) @ state[p + "projection.U"] + state[p + "projection.mu"]).view(h.shape)
        s1 = F.conv_transpose2d(phi, state[p + "subspace_conv1.0.weight"], state[p + "subspace_conv1.0.bias"])
        h = F.conv_transpose2d(F.leaky_relu(h + s1, 0.2), state[p + "feature_conv1.1.weight"],
                               state[p + "feature_conv1.1.bias"], stride=2, padding=1, output_padding=1)
        s2 = F.conv_transpose2d(phi, state[p + "subspace_conv2.0.weight"], state[p + "subspace_conv2.0.bias"],
                                stride=2, padding=1, output_padding=1)
        h = F.conv_transpose2d(F.leaky_relu(h + s2, 0.2), state[p + "feature_conv2.1.weight"],
                               state[p + "feature_conv2.1.bias"], padding=1)
    return torch.tanh(F.conv2d(F.leaky_relu(h, 0.2), state["to_rgb.0.1.weight"], state["to_rgb.0.1.bias"], padding=3))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_port_checkpoint(tmp_path_factory.mktemp("eigengan") / "ckpt.pt", random_state(port_keys(TINY_BLOCKS, 3, 8, 4)))


def write_params(folder: Path, **faces) -> Path:
    """params.yaml with the repository's sections and `faces` overridden."""
    return write_params_file(folder / "params.yaml", "faces", **faces)


def test_the_ports_default_checkpoint_layout_is_what_loads():
    arch = eigengan.Architecture(256, 6, 512, 16, 512)
    expected = port_keys(PORT_256_BLOCKS, 6, 512, 16)
    assert eigengan.checkpoint_layout(arch) == expected and len(expected) == 70
    module = eigengan.Generator(arch).state_dict()
    assert list(module) == list(expected)  # the module's own names are the port's, key for key
    assert {key: tuple(value.shape) for key, value in module.items()} == expected


def test_a_port_checkpoint_loads_unchanged_and_runs_the_ports_forward_pass(checkpoint):
    generator = eigengan.load_generator(checkpoint)
    assert generator.arch == eigengan.Architecture(**TINY)
    with torch.serialization.safe_globals(eigengan.SAFE_GLOBALS):
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")["g_ema"]
    e, z = torch.randn(2, 8), torch.randn(2, 3, 3)
    with torch.no_grad():
        ours = generator(e, z)
    assert ours.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, port_forward(state, e, z), rtol=1e-5, atol=1e-5)
    # A bare state dict (g_ema saved alone), without the training args: the architecture comes from the shapes.
    torch.save(state, checkpoint.parent / "bare.pt")
    assert eigengan.load_generator(checkpoint.parent / "bare.pt").arch == eigengan.Architecture(**TINY)


def test_a_missing_or_mismatched_checkpoint_is_one_line_naming_the_key(checkpoint, tmp_path):
    with pytest.raises(UserError, match="not found"):
        eigengan.load_generator(tmp_path / "nowhere.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a loadable PyTorch checkpoint"):
        eigengan.load_generator(tmp_path / "junk.pt")
    state = random_state(port_keys(TINY_BLOCKS, 3, 8, 4))
    cases = {
        "lacks key blocks.1.feature_conv2.1.bias": lambda s: s.pop("blocks.1.feature_conv2.1.bias"),
        "unexpected key blocks.0.extra": lambda s: s.update({"blocks.0.extra": torch.zeros(1)}),
        r"blocks.2.projection.U has shape \[3, 10\], expected \[3, 2048\]":
            lambda s: s.update({"blocks.2.projection.U": torch.zeros(3, 10)}),
    }
    for message, change in cases.items():
        broken = dict(state)
        change(broken)
        path = save_port_checkpoint(tmp_path / "broken.pt", broken)
        with pytest.raises(UserError, match=message) as error:
            eigengan.load_generator(path)
        assert "\n" not in str(error.value)
    # Training args that disagree with the weights (a 64 px run's args on 32 px weights): the first bad key.
    path = save_port_checkpoint(tmp_path / "args.pt", state, size=64)
    with pytest.raises(UserError, match=r"key blocks.1.subspace_conv2.0.weight has shape \[16, 8, 3, 3\], expected \[16, 16"):
        eigengan.load_generator(path)


def test_traversal_moves_only_the_pose_coordinate(checkpoint):
    generator = eigengan.load_generator(checkpoint)
    assert eigengan.pose_dimension(generator, [1, None]) == (1, 0)  # L = [9, 6, 3]: dim 0 has the largest |L|
    assert eigengan.pose_dimension(generator, [2, 2]) == (2, 2)
    with pytest.raises(UserError, match="layers 0-2"):
        eigengan.pose_dimension(generator, [3, 0])
    positions = eigengan.traversal_positions([-50, -35, 0, 35, 50], [-2.0, 2.0])
    np.testing.assert_allclose(positions, [-2.0, -1.4, 0.0, 1.4, 2.0], atol=1e-6)
    assert eigengan.centre_view(positions, [-2.0, 2.0]) == 2
    np.testing.assert_allclose(eigengan.traversal_positions([0.0], [-2.0, 2.0]), [0.0])
    latents = eigengan.identity_latents(generator.arch, 0, 7, 1.0)
    again = eigengan.identity_latents(generator.arch, 0, 7, 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(latents, again))
    assert not np.array_equal(latents[0], eigengan.identity_latents(generator.arch, 0, 8, 1.0)[0])
    np.testing.assert_allclose(eigengan.identity_latents(generator.arch, 0, 7, 0.5)[1], 0.5 * latents[1], rtol=1e-6)
    views = eigengan.generate_views(generator, latents, (0, 1), positions, 64)
    assert views.shape == (5, 64, 64, 3) and views.dtype == np.uint8
    assert len({view.tobytes() for view in views}) == 5  # the pose coordinate changes every view
    e, z = latents
    z = z.copy()
    z[0, 1] = positions[2]
    with torch.no_grad():
        direct = generator(torch.from_numpy(e[None]), torch.from_numpy(z[None]))
    assert eigengan.generate_views(generator, (e, z), (0, 1), positions[2:3], 32)[0].tobytes() == \
        ((direct[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8).tobytes()


def fake_descriptor(far_view_means: set[float] = frozenset()):
    """A stand-in for dlib's descriptor on generated noise: every image is a face of one person, except images
    whose mean is listed (another person)."""
    def descriptor(image: np.ndarray) -> np.ndarray:
        far = round(float(image.mean()), 3) in far_view_means
        return np.full(128, 1.0 if far else 0.0, np.float32)
    return descriptor


def check_with_stand_in(far_view_means: set[float], task: tuple[np.ndarray, int]) -> object:
    """faces' eigengan check with the stand-in descriptor, in whichever worker process runs it."""
    eigengan.face_descriptor = fake_descriptor(far_view_means)
    return eigengan.check_identity(*task)


def test_shards_schema_and_the_identity_filter(checkpoint, tmp_path, template_dir, monkeypatch):
    params = write_params(tmp_path, source="eigengan", eigengan_weights=str(checkpoint), identities=3, image_size=64,
                          yaw_degrees=[-35.0, 0.0, 35.0], shard_size=6, detection_check_identities=0)
    generator = eigengan.load_generator(checkpoint)
    positions = eigengan.traversal_positions([-35.0, 0.0, 35.0], [-2.0, 2.0])
    # Identity 1's last view turns into another person; the others stay one person.
    latents = eigengan.identity_latents(generator.arch, 0, 1, 1.0)
    drifting = eigengan.generate_views(generator, latents, (0, 1), positions, 64)[2]
    monkeypatch.setattr(eigengan, "face_descriptor", fake_descriptor({round(float(drifting.mean()), 3)}))
    metrics = run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    check = metrics["eigengan_identity_check"]
    assert check["generated"] == 3 and check["kept"] == 2 and check["dropped_other_person"] == 1
    assert check["pose_dimension"] == [0, 1]
    assert check["dropped_lines"] == ["identity 1: view 2: another person (distance 11.31 >= 0.6)"]
    assert metrics["identities"] == 2 and metrics["images"] == 6 and metrics["source"] == "eigengan"
    assert json.loads((tmp_path / "faces.json").read_text())["eigengan_identity_check"]["kept"] == 2
    index = read_index(tmp_path / "faces", FACES)
    assert index["source"] == "eigengan" and not index["has_truth"] and index["latent_ids"] == [0, 2]
    assert index["pose_dimension"] == [0, 1] and index["pose_positions"] == [-2.0, 0.0, 2.0]
    assert index["views_per_identity"] == 3 and index["centre_view"] == 1 and "yaw_degrees" not in index
    arrays = [shard for _, shard in iter_shards(tmp_path / "faces", FACES)]
    assert set(arrays[0]) == {"images", "identity", "view", "yaw", "pitch", "roll", "landmarks", "identity_ids"}  # no truth
    data = {key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]}
    np.testing.assert_array_equal(data["identity"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data["view"], [0, 1, 2, 0, 1, 2])
    assert np.isnan(data["yaw"]).all() and np.isnan(data["landmarks"]).all()
    # Shard identity 1 is latent 2: its views are that latent's traversal, byte for byte.
    expected = eigengan.generate_views(generator, eigengan.identity_latents(generator.arch, 0, 2, 1.0), (0, 1), positions, 64)
    assert data["images"][3:].tobytes() == expected.tobytes()
    assert (tmp_path / "faces" / "preview" / "grid.png").is_file()
    # Two workers (started after torch ran, by the fork server: they get the stand-in with each task, since they
    # inherit nothing from this process): the same shards, byte for byte.
    stand_in = functools.partial(check_with_stand_in, {round(float(drifting.mean()), 3)})
    monkeypatch.setattr(faces_cli, "_check_eigengan_identity", stand_in)
    run(params, template_dir, tmp_path / "faces2", tmp_path / "faces2.json", 2)
    for entry in index["shards"]:
        assert (tmp_path / "faces" / entry["file"]).read_bytes() == (tmp_path / "faces2" / entry["file"]).read_bytes()


def test_random_weights_through_faces_pafs_blend(checkpoint, tmp_path, template_dir):
    """Random weights draw no faces: dlib drops every identity, and each stage says so instead of inventing data."""
    from headtex.blend.cli import run as blend
    from headtex.pafs.cli import run as pafs

    params = write_params(tmp_path, source="eigengan", eigengan_weights=str(checkpoint), identities=2, image_size=64,
                          yaw_degrees=[-35.0, 0.0, 35.0], detection_check_identities=None)
    metrics = run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    check = metrics["eigengan_identity_check"]
    assert check["kept"] == 0 and check["dropped_no_face"] == 2 and metrics["identities"] == 0
    assert check["dropped_lines"] == ["identity 0: view 1 (centre): no face found",
                                      "identity 1: view 1 (centre): no face found"]
    assert metrics["log_lines"] == ["eigengan: 0 of 2 identities kept (2 without a face in every view, "
                                    "0 turning into another person)", *check["dropped_lines"]]
    assert read_index(tmp_path / "faces", FACES)["shards"] == []
    made = pafs(params, tmp_path / "faces", template_dir, tmp_path / "pafs", tmp_path / "pafs.json", workers=1)
    assert made["identities_in"] == made["identities_kept"] == 0
    with pytest.raises(UserError, match="of 0 identities"):
        blend(params, tmp_path / "pafs", tmp_path / "faces", template_dir, tmp_path / "blend", tmp_path / "blend.json", 1)


def test_bad_eigengan_params_are_one_line_errors(tmp_path, template_dir):
    for faces, message in (({"eigengan_weights": None}, "needs eigengan_weights"),
                           ({"eigengan_pose": [0]}, "eigengan_pose must be"),
                           ({"eigengan_pose_range": [1.0, 1.0]}, "eigengan_pose_range must be")):
        params = write_params(tmp_path, source="eigengan", **{"eigengan_weights": "x.pt", **faces})
        with pytest.raises(UserError, match=message):
            run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    params = write_params(tmp_path, source="eigengan", eigengan_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="missing.pt: faces.eigengan_weights not found"):
        run(params, template_dir, tmp_path / "faces", tmp_path / "faces.json", 1)
    assert not (tmp_path / "faces").exists()
