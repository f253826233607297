import numpy as np
import pytest

from headtex.io import atomic_dir, load_npz, save_npz


def test_shards_are_byte_identical_for_identical_arrays(tmp_path):
    arrays = {"images": np.arange(48, dtype=np.uint8).reshape(2, 4, 2, 3), "yaw": np.array([1.5, np.nan], np.float32)}
    save_npz(tmp_path / "a.npz", **arrays)
    save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded["images"], arrays["images"])
    np.testing.assert_array_equal(loaded["yaw"], arrays["yaw"])


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(path)


def test_interrupted_stage_leaves_no_half_written_output(tmp_path):
    final = tmp_path / "data" / "stage"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as staging:
            (staging / "shard-00000.npz").write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert not final.exists()
    assert list((tmp_path / "data").iterdir()) == []
    with atomic_dir(final) as staging:
        (staging / "index.json").write_text("{}")
    assert (final / "index.json").is_file()
