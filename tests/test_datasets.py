"""datasets: every shard a stage reads is checked, and a problem is one line naming the file and the stage."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from headtex.datasets import (
    FACES, MASKS, ShardWriter, held_out_identities, iter_shards, mean_texture, open_textures, read_index,
    read_mask_bank, read_shard, read_textures, split_identities, write_index,
)
from headtex.io import UserError, save_npz

SIZE = 16



def damaged(path, where: slice):
    """The shard with the bytes at `where` inverted (a damage the zip CRC catches)."""
    data = bytearray(path.read_bytes())
    data[where] = bytes(b ^ 0xFF for b in data[where])
    path.write_bytes(bytes(data))
    return path


def assert_one_damaged_shard_line(read, path) -> None:
    """Reading raises one line that names the shard, says it is damaged and how to rebuild it."""
    with pytest.raises(UserError) as error:
        read()
    message = str(error.value)
    assert str(path) in message and "damaged shard" in message and "dvc repro -f -s blend" in message
    assert "\n" not in message

def textures_dataset(folder, identities=(3, 5, 8), shard_size=2):
    writer = ShardWriter(folder, shard_size)
    for identity in identities:
        writer.add({"textures": np.full((1, SIZE, SIZE, 3), identity, np.uint8),
                    "identity": np.array([identity], np.int64)})
    writer.flush()
    write_index(folder, writer.entries)
    return writer.entries


def test_shard_writer_groups_whole_identities_and_round_trips(tmp_path):
    """What a stage writes is what the next reads, identities never split across shards."""
    entries = textures_dataset(tmp_path, shard_size=2)
    assert [e["identities"] for e in entries] == [[3, 5], [8]] and [e["count"] for e in entries] == [2, 1]
    textures, identities = read_textures(tmp_path)
    assert identities.tolist() == [3, 5, 8] and (textures[:, 0, 0, 0] == [3, 5, 8]).all()


def test_damaged_bytes_in_a_shard_name_the_file_and_the_stage(tmp_path):
    """A flipped byte range inside an array fails the zip's CRC check: one line, never a traceback."""
    entries = textures_dataset(tmp_path)
    path = damaged(tmp_path / entries[0]["file"], slice(300, 340))  # inside textures.npy's data
    assert_one_damaged_shard_line(lambda: read_textures(tmp_path), path)


@pytest.mark.parametrize("problem, expected", [
    ("missing_array", "no array 'identity'"),
    ("wrong_dtype", "is float32 with 4 axes, expected uint8"),
    ("wrong_count", "index.json says 5"),
    ("wrong_identities", "identities differ from index.json"),
    ("missing_file", "listed in index.json but missing"),
])
def test_shards_that_disagree_with_their_index_are_rejected(tmp_path, problem, expected):
    textures, identity = np.zeros((2, SIZE, SIZE, 3), np.uint8), np.array([1, 2], np.int64)
    entry = {"file": "shard-00000.npz", "identities": [1, 2], "count": 2}
    arrays = {"textures": textures, "identity": identity}
    if problem == "missing_array":
        del arrays["identity"]
    elif problem == "wrong_dtype":
        arrays["textures"] = textures.astype(np.float32)
    elif problem == "wrong_count":
        entry["count"] = 5
    elif problem == "wrong_identities":
        entry["identities"] = [1, 7]
    if problem != "missing_file":
        save_npz(tmp_path / entry["file"], **arrays)
    write_index(tmp_path, [entry])
    with pytest.raises(UserError, match=expected):
        read_textures(tmp_path)


def test_missing_or_damaged_index_says_which_stage_to_run(tmp_path):
    with pytest.raises(UserError, match=r"index.json: missing; run the masks stage first \(`dvc repro masks`\)"):
        read_mask_bank(tmp_path, SIZE)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(UserError, match="damaged index"):
        read_index(tmp_path, MASKS)


def test_only_the_asked_arrays_are_read(tmp_path):
    """Stages read lazily: blend takes the lit textures from a faces shard without loading its images."""
    save_npz(tmp_path / "s.npz", identity=np.array([4], np.int64), identity_ids=np.array([4], np.int64),
             lit_texture=np.zeros((1, SIZE, SIZE, 3), np.uint8), images=np.zeros((1, 8, 8, 3), np.uint8))
    entry = {"file": "s.npz", "identities": [4], "count": 1}
    assert set(read_shard(tmp_path, entry, FACES, ("identity_ids", "lit_texture"))) == {"identity_ids", "lit_texture"}
    write_index(tmp_path, [entry])
    assert [set(a) for _, a in iter_shards(tmp_path, FACES)] == [{"identity", "identity_ids", "lit_texture", "images"}]


def test_identity_split_never_overlaps_the_mask_bank():
    ids = np.arange(20)
    held_out = held_out_identities(ids, 4)
    train, test = split_identities(ids, held_out, 5, seed=0)
    assert held_out.tolist() == [16, 17, 18, 19]
    assert not (set(train) | set(test)) & set(held_out.tolist()) and not set(train) & set(test)
    assert len(test) == 5 and len(train) == 11


def test_a_damaged_shard_stops_a_stage_with_one_line(tmp_path, template_dir, monkeypatch, capsys):
    """`headtex pafs` over a faces shard with a damaged byte range: exit 1, one line naming the shard."""
    from headtex.cli import main

    faces = tmp_path / "faces"
    writer = ShardWriter(faces, 16, per_identity=())
    writer.add({"images": np.zeros((2, 64, 64, 3), np.uint8), "identity": np.zeros(2, np.int64),
                "view": np.arange(2, dtype=np.int16), "yaw": np.zeros(2, np.float32)})
    writer.flush()
    write_index(faces, writer.entries, has_truth=False, views_per_identity=2)
    path = faces / writer.entries[0]["file"]
    data = bytearray(path.read_bytes())
    data[1000:1100] = b"\xff" * 100
    path.write_bytes(bytes(data))
    monkeypatch.setattr(sys, "argv", ["headtex", "pafs", "--faces", str(faces), "--template", str(template_dir),
                                      "--out", str(tmp_path / "pafs"), "--metrics", str(tmp_path / "m.json"),
                                      "--timing", str(tmp_path / "t.json"), "--workers", "1"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert err.startswith(f"error: {path}: damaged shard (BadZipFile: Bad CRC-32") and "\n" not in err
    assert "faces stage" in err and not (tmp_path / "pafs").exists()


# ---- rows on demand (training streams from the shards) ----

def varied_dataset(folder, shard_size=3):
    """Textures whose every byte differs (so an off-by-one offset shows), over several shards."""
    rng = np.random.default_rng(1)
    writer = ShardWriter(folder, shard_size)
    for identity in (2, 4, 6, 7, 9, 11, 12):
        writer.add({"textures": rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8),
                    "identity": np.array([identity], np.int64)})
    writer.flush()
    write_index(folder, writer.entries)
    return writer.entries


def test_rows_read_on_demand_equal_what_np_load_reads(tmp_path):
    """Single rows, negative rows, fancy and sliced rows, and a pickled copy (a DataLoader worker) all read the
    bytes np.load reads; the streamed mean equals the in-memory mean."""
    import pickle

    entries = varied_dataset(tmp_path)
    assert len(entries) == 3
    full, identities = read_textures(tmp_path)
    rows, row_identities = open_textures(tmp_path)
    assert rows.shape == full.shape and rows.dtype == np.uint8 and row_identities.tolist() == identities.tolist()
    for index in (0, 2, 3, 6, -1):
        assert np.array_equal(rows[index], full[index])
    assert np.array_equal(rows[[5, 0, 3]], full[[5, 0, 3]]) and np.array_equal(rows[1:6:2], full[1:6:2])
    assert np.array_equal(pickle.loads(pickle.dumps(rows))[4], full[4])
    assert rows[2].flags.writeable  # torch.from_numpy takes it without a copy or a warning
    assert np.array_equal(mean_texture(rows, chunk=2), np.rint(full.astype(np.float64).mean(0)).astype(np.uint8))
    with pytest.raises(IndexError):
        rows[7]


def test_damaged_shard_opened_for_row_reads_is_one_clear_line(tmp_path):
    """The CRCs are checked once when the rows are opened: a flipped byte is the same one line as read_textures'."""
    entries = varied_dataset(tmp_path)
    path = damaged(tmp_path / entries[1]["file"], slice(400, 401))  # inside textures.npy's data
    assert_one_damaged_shard_line(lambda: open_textures(tmp_path), path)


@pytest.mark.parametrize("problem, expected", [
    ("compressed", "compressed, so its rows cannot be read on demand"),
    ("wrong_dtype", "is float32 with 4 axes, expected uint8"),
    ("wrong_count", "index.json says 5"),
    ("truncated", "damaged shard"),
])
def test_shards_unfit_for_row_reads_are_rejected(tmp_path, problem, expected):
    textures, identity = np.arange(2 * SIZE * SIZE * 3, dtype=np.uint8).reshape(2, SIZE, SIZE, 3), np.array([1, 2])
    entry = {"file": "shard-00000.npz", "identities": [1, 2], "count": 5 if problem == "wrong_count" else 2}
    path = tmp_path / entry["file"]
    if problem == "compressed":
        np.savez_compressed(path, textures=textures, identity=identity)
    else:
        save_npz(path, textures=textures.astype(np.float32) if problem == "wrong_dtype" else textures,
                 identity=identity)
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    write_index(tmp_path, [entry])
    with pytest.raises(UserError, match=expected):
        open_textures(tmp_path)


def test_row_reads_check_each_arrays_rows_against_the_index(tmp_path):
    """open_rows checks the streamed array's own row count against index.json: a shard whose textures hold a row
    more than its identities and index say is rejected when opened (one line naming the shard and the stage),
    never streamed as 3 textures beside 2 identities (train would pair rows with the wrong identity's masks)."""
    from headtex.datasets import TEXTURES, open_rows

    textures = np.arange(3 * SIZE * SIZE * 3, dtype=np.uint8).reshape(3, SIZE, SIZE, 3)
    entry = {"file": "shard-00000.npz", "identities": [1, 2], "count": 2}
    save_npz(tmp_path / entry["file"], textures=textures, identity=np.array([1, 2], np.int64))
    write_index(tmp_path, [entry])
    assert read_shard(tmp_path, entry, TEXTURES, ("identity",))["identity"].tolist() == [1, 2]  # identities agree
    message = f"{tmp_path / entry['file']}: array 'textures' has 3 rows, index.json says 2; rerun the blend stage"
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as error:
        open_textures(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="array 'textures' has 3 rows, index.json says 2"):
        open_rows(tmp_path, TEXTURES, "textures")
