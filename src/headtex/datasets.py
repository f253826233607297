"""The datasets between stages: sharded .npz files + index.json, every read checked (docs/DATA.md).

One home for shard writing (`ShardWriter`), shard reading (`read_shard`, `iter_shards`, and the
readers of textures, the mask bank and the UV valid region) and the identity split (which
identities the mask bank holds out, which blend puts in test). A reader checks what it loads: the
zip's integrity (CRC), the array names, dtypes and ranks, and the index against the shard; a
problem is one line naming the file and the stage that writes it.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headtex.io import UserError, read_png, save_npz, write_json

SHARD_PATTERN = "shard-{:05d}.npz"
SPLIT_PURPOSE = 1  # rng purpose id of blend's train/test split


@dataclass(frozen=True)
class Kind:
    """What one stage's shards hold: array name -> (dtype, rank); `per_identity` arrays have one row per identity."""

    stage: str
    arrays: dict[str, tuple[str, int]]
    per_identity: tuple[str, ...] = ()

    def fix(self, folder: Path) -> str:
        return f"rerun the {self.stage} stage (`dvc repro -f -s {self.stage}`) or restore {folder} with `dvc checkout`"


FACES = Kind("faces", {
    "images": ("uint8", 4), "identity": ("int64", 1), "view": ("int16", 1), "yaw": ("float32", 1),
    "pitch": ("float32", 1), "roll": ("float32", 1), "landmarks": ("float32", 3),
    "identity_ids": ("int64", 1), "lit_texture": ("uint8", 4), "shape": ("float32", 2),
}, per_identity=("identity_ids", "lit_texture", "shape"))
PAFS = Kind("pafs", {
    "identity": ("int64", 1), "view": ("int16", 1), "paf": ("uint8", 4), "visible": ("uint8", 3),
    "landmarks": ("float32", 3), "rotation": ("float32", 3), "pose": ("float32", 2), "scale": ("float32", 1),
    "translation": ("float32", 2), "shape": ("float32", 2), "view_cosine": ("uint8", 3),
})
MASKS = Kind("masks", {"masks": ("uint8", 3), "identity": ("int64", 1), "view": ("int16", 1)})
TEXTURES = Kind("blend", {"textures": ("uint8", 4), "identity": ("int64", 1)})


# ---- index ----

def write_index(folder: Path, shards: list[dict], **info: object) -> None:
    """index.json of a sharded dataset: the shard files with what each holds, plus dataset-wide facts."""
    write_json(Path(folder) / "index.json", {"shards": shards, **info})


def read_index(folder: Path, kind: Kind) -> dict:
    path = Path(folder) / "index.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; run the {kind.stage} stage first (`dvc repro {kind.stage}`)")
    try:
        index = json.loads(path.read_text())
        entries = index["shards"]
        for entry in entries:
            entry["file"], entry["count"], entry["identities"]  # noqa: B018 (each must be present)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: damaged index ({error.__class__.__name__}: {error}); {kind.fix(folder)}") from None
    return index


# ---- shards ----

def read_shard(folder: Path, entry: dict, kind: Kind, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Some (default: all declared present) arrays of one shard, read lazily and checked against its index entry."""
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise UserError(f"{path}: listed in index.json but missing; {kind.fix(folder)}")
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = keys if keys is not None else tuple(k for k in kind.arrays if k in data.files)
            absent = [key for key in wanted if key not in data.files]
            if absent:
                raise UserError(f"{path}: no array {absent[0]!r} (holds {', '.join(sorted(data.files))}); "
                                f"{kind.fix(folder)}")
            arrays = {key: data[key] for key in wanted}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: damaged shard ({error.__class__.__name__}: {error}); {kind.fix(folder)}") from None
    for key, array in arrays.items():
        dtype, rank = kind.arrays.get(key, (str(array.dtype), array.ndim))
        if array.dtype != np.dtype(dtype) or array.ndim != rank:
            raise UserError(f"{path}: array {key!r} is {array.dtype} with {array.ndim} axes, expected {dtype} with "
                            f"{rank}; {kind.fix(folder)}")
        rows = len(entry["identities"]) if key in kind.per_identity else entry["count"]
        if len(array) != rows:
            raise UserError(f"{path}: array {key!r} has {len(array)} rows, index.json says {rows}; {kind.fix(folder)}")
    if "identity" in arrays and set(arrays["identity"].tolist()) != {int(i) for i in entry["identities"]}:
        raise UserError(f"{path}: identities differ from index.json; {kind.fix(folder)}")
    return arrays


def iter_shards(folder: Path, kind: Kind, keys: tuple[str, ...] | None = None
                ) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """(index entry, arrays) for every shard of a dataset, in index order."""
    for entry in read_index(folder, kind)["shards"]:
        yield entry, read_shard(folder, entry, kind, keys)


class ShardWriter:
    """Groups whole identities into shards of at most shard_size rows (a larger identity gets a shard alone).

    A record is one identity: per-row arrays (leading axis = its rows, with an `identity` array) plus,
    named in `per_identity`, arrays stacked one per identity; with `per_identity` given, shards also
    hold `identity_ids`. Arrays are written in the record's key order.
    """

    def __init__(self, folder: Path, shard_size: int, per_identity: tuple[str, ...] | None = None) -> None:
        self.folder, self.shard_size, self.per_identity = Path(folder), shard_size, per_identity
        self.pending: list[dict[str, np.ndarray]] = []
        self.entries: list[dict] = []

    def add(self, record: dict[str, np.ndarray]) -> None:
        if self.pending and sum(len(r["identity"]) for r in self.pending) + len(record["identity"]) > self.shard_size:
            self.flush()
        self.pending.append(record)

    def flush(self) -> None:
        if not self.pending:
            return
        records, self.pending = self.pending, []
        per_identity = self.per_identity or ()
        arrays = {key: np.concatenate([r[key] for r in records]) for key in records[0] if key not in per_identity}
        identities = [int(r["identity"][0]) for r in records]
        if self.per_identity is not None:
            arrays["identity_ids"] = np.array(identities, dtype=np.int64)
            arrays.update({key: np.stack([r[key] for r in records]) for key in per_identity if key in records[0]})
        name = SHARD_PATTERN.format(len(self.entries))
        save_npz(self.folder / name, **arrays)
        self.entries.append({"file": name, "identities": identities, "count": int(len(arrays["identity"]))})

    @property
    def count(self) -> int:
        return sum(entry["count"] for entry in self.entries)


# ---- rows on demand ----

ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. sizes), name length, extra length


def stored_array(path: Path, name: str, kind: Kind, folder: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of array `name` inside an uncompressed shard, from its .npy header.

    The shard's CRCs are checked here, once, streaming (ZipFile.testzip), so later row reads need no checks.
    """
    fix = kind.fix(folder)
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise UserError(f"{path}: damaged shard (bad CRC in {damaged}); {fix}")
            try:
                info = archive.getinfo(f"{name}.npy")
            except KeyError:
                raise UserError(f"{path}: no array {name!r} (holds {', '.join(sorted(n[:-4] for n in archive.namelist()))}); "
                                f"{fix}") from None
            if info.compress_type != zipfile.ZIP_STORED:
                raise UserError(f"{path}: array {name!r} is compressed, so its rows cannot be read on demand; {fix}")
            handle.seek(info.header_offset)
            signature, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(handle.read(ZIP_LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise UserError(f"{path}: damaged shard (bad local header of {name!r}); {fix}")
            start = info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle)
            offset = handle.tell()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as error:
        raise UserError(f"{path}: damaged shard ({error.__class__.__name__}: {error}); {fix}") from None
    if fortran or dtype.hasobject or offset + int(np.prod(shape)) * dtype.itemsize > start + info.file_size:
        raise UserError(f"{path}: array {name!r} is not a plain C-ordered array of its stated size; {fix}")
    return offset, tuple(int(v) for v in shape), dtype


class ShardRows:
    """One array of a sharded dataset, its rows read from disk on demand (positional reads, nothing mapped).

    Memory is what the caller asks for: `rows[i]` is one row, `rows[[i, j]]` two. Each process opens its own
    file handles on first use (DataLoader workers get a pickled copy without handles). The byte offsets come
    from the shards' .npy headers (`stored_array`), which are checked against the index when opened.
    """

    def __init__(self, parts: list[tuple[str, int, int]], row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.parts = parts  # (path, data offset, rows) per shard, in index order
        self.row_shape, self.dtype = tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.starts = np.cumsum([0] + [rows for _, _, rows in parts])
        self._handles: dict[int, int] = {}
        self._pid = -1

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}, "_pid": -1}

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close this process' file handles (reopened on the next read)."""
        if getattr(self, "_pid", -1) == os.getpid():
            for descriptor in self._handles.values():
                os.close(descriptor)
        self._handles, self._pid = {}, -1

    def _descriptor(self, part: int) -> int:
        if self._pid != os.getpid():  # a forked worker must not share (or close) its parent's descriptors
            self._handles, self._pid = {}, os.getpid()
        if part not in self._handles:
            self._handles[part] = os.open(self.parts[part][0], os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._handles[part]

    def _read(self, index: int, out: np.ndarray) -> None:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        part = int(np.searchsorted(self.starts, index, side="right") - 1)
        path, offset, _ = self.parts[part]
        position = offset + (index - int(self.starts[part])) * self.row_bytes
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < self.row_bytes:  # pread may return fewer bytes than asked
            count = os.preadv(self._descriptor(part), [buffer[done:]], position + done)
            if count <= 0:
                raise UserError(f"{path}: shard ends early (truncated since it was opened)")
            done += count

    def __getitem__(self, index: int | np.integer | np.ndarray | list | slice) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            out = np.empty(self.row_shape, self.dtype)
            self._read(int(index), out)
            return out
        indices = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        for position, row in enumerate(indices.tolist()):
            self._read(row, out[position])
        return out


def open_rows(folder: Path, kind: Kind, key: str) -> tuple[ShardRows, list[dict]]:
    """Array `key` of every shard, as rows read on demand, its headers checked against its Kind and the index
    (dtype, rank, row count) and its shards' CRCs checked once; also the index entries."""
    folder = Path(folder)
    entries = read_index(folder, kind)["shards"]
    dtype, rank = kind.arrays[key]
    parts, row_shapes = [], set()
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            raise UserError(f"{path}: listed in index.json but missing; {kind.fix(folder)}")
        offset, shape, stored = stored_array(path, key, kind, folder)
        if stored != np.dtype(dtype) or len(shape) != rank:
            raise UserError(f"{path}: array {key!r} is {stored} with {len(shape)} axes, expected {dtype} with "
                            f"{rank}; {kind.fix(folder)}")
        if shape[0] != entry["count"]:
            raise UserError(f"{path}: array {key!r} has {shape[0]} rows, index.json says {entry['count']}; "
                            f"{kind.fix(folder)}")
        parts.append((str(path), offset, shape[0]))
        row_shapes.add(shape[1:])
    if len(row_shapes) > 1:
        raise UserError(f"{folder}: shards disagree on the shape of {key!r} rows ({sorted(row_shapes)}); "
                        f"{kind.fix(folder)}")
    row_shape = row_shapes.pop() if row_shapes else (0,) * (rank - 1)
    return ShardRows(parts, row_shape, np.dtype(dtype)), entries


# ---- what train, evaluate and blend read ----

def open_textures(folder: Path) -> tuple[ShardRows, np.ndarray]:
    """The textures of a blend split as rows read on demand (N,U,U,3 uint8; memory O(rows asked)) and their
    identities (in memory): what training streams from. Same checks as read_textures."""
    textures, entries = open_rows(folder, TEXTURES, "textures")
    identities = [read_shard(folder, entry, TEXTURES, ("identity",))["identity"] for entry in entries]
    if not len(textures):
        raise UserError(f"{folder}: no textures (every identity was rejected or the split is empty); see metrics/blend.json")
    if textures.row_shape[2] != 3 or textures.row_shape[0] != textures.row_shape[1]:
        raise UserError(f"{folder}: textures must be N,U,U,3, got {textures.shape}; {TEXTURES.fix(folder)}")
    return textures, np.concatenate(identities)


def mean_texture(textures: np.ndarray | ShardRows, chunk: int = 256) -> np.ndarray:
    """The per-texel mean (rounded, uint8) of N,U,U,3 textures, summed `chunk` rows at a time (exact: integer sums)."""
    total = np.zeros(textures.shape[1:], dtype=np.float64)
    for start in range(0, len(textures), chunk):
        total += textures[start:start + chunk].astype(np.float64).sum(axis=0)
    return np.rint(total / max(len(textures), 1)).astype(np.uint8)


def read_textures(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All textures of a blend split (N,U,U,3 uint8) and their identities, in memory (11 GB at the thesis' 99k)."""
    textures, identities = [], []
    for entry, arrays in iter_shards(folder, TEXTURES, ("textures", "identity")):
        shard = arrays["textures"]
        if shard.shape[3] != 3 or shard.shape[1] != shard.shape[2]:
            raise UserError(f"{Path(folder) / entry['file']}: textures must be N,U,U,3, got {shard.shape}; "
                            f"{TEXTURES.fix(folder)}")
        textures.append(shard)
        identities.append(arrays["identity"])
    if not textures or sum(len(t) for t in textures) == 0:
        raise UserError(f"{folder}: no textures (every identity was rejected or the split is empty); see metrics/blend.json")
    sizes = {t.shape[1] for t in textures}
    if len(sizes) > 1:
        raise UserError(f"{folder}: shards disagree on the texture size ({sorted(sizes)}); {TEXTURES.fix(folder)}")
    return np.concatenate(textures), np.concatenate(identities)


def read_mask_bank(folder: Path, size: int) -> np.ndarray:
    """The real-occlusion masks (N,U,U uint8, 255 = visible)."""
    masks = []
    for entry, arrays in iter_shards(folder, MASKS, ("masks",)):
        if arrays["masks"].shape[1:] != (size, size):
            raise UserError(f"{Path(folder) / entry['file']}: masks are {arrays['masks'].shape[1:]}, the textures "
                            f"{size}x{size}; {MASKS.fix(folder)}")
        masks.append(arrays["masks"])
    if not masks or sum(len(m) for m in masks) == 0:
        raise UserError(f"{folder}: the mask bank is empty but masks.p_real > 0")
    return np.concatenate(masks)


def read_valid(path: Path, size: int) -> np.ndarray:
    """The UV valid region (True = on the head) from the template's valid.png (255 = on the head)."""
    valid = read_png(path)
    if valid.shape != (size, size):
        raise UserError(f"{path}: UV valid region is {valid.shape}, the textures are {size}x{size}; "
                        "rerun the template stage (`dvc repro template`)")
    return valid > 127


# ---- the identity split ----

def present_identities(index: dict) -> np.ndarray:
    """The sorted identity ids a dataset's index lists."""
    return np.array(sorted({int(i) for entry in index["shards"] for i in entry["identities"]}), dtype=np.int64)


def held_out_identities(identities: np.ndarray, count: int) -> np.ndarray:
    """The mask bank's identities: the `count` highest ids present. blend never uses them (train or test).

    Chosen by id, not by a random draw, so that masks and blend agree from the list of ids alone.
    """
    ids = np.unique(np.asarray(identities, dtype=np.int64))
    if not 0 < count < len(ids):
        raise ValueError(f"cannot hold out {count} of {len(ids)} identities for the mask bank (need 0 < count < identities)")
    return ids[len(ids) - count:]


def split_identities(identities: np.ndarray, held_out: np.ndarray, test_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) ids: held-out ids removed; test = the `test_count` ids with the smallest per-identity key.

    Each id's key comes from rng([seed, id, SPLIT_PURPOSE]), so an identity's side never depends on the
    order or number of shards, and adding identities moves at most the few near the cut.
    """
    candidates = np.setdiff1d(np.unique(np.asarray(identities, dtype=np.int64)), held_out)
    if test_count >= len(candidates):
        raise ValueError(f"cannot put {test_count} of the {len(candidates)} blend identities in test (none left to train)")
    keys = np.array([np.random.default_rng([seed, int(i), SPLIT_PURPOSE]).random() for i in candidates])
    test = np.zeros(len(candidates), dtype=bool)
    test[np.argsort(keys, kind="stable")[:test_count]] = True
    return candidates[~test], candidates[test]
