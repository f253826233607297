"""Peak memory of training at a paper-scale dataset: textures held in memory vs read from the shards on demand.

    python tools/train_memory.py synth DIR COUNT          # COUNT random 192x192 textures as blend-style shards
    python tools/train_memory.py run DIR memory|stream STEPS

`run` trains STEPS steps the way the train stage does (params.yaml's model and train sections, the mask bank in
data/masks, models/template/valid.png) on the textures in DIR, then prints one JSON line: the peak resident set
(ru_maxrss), the resident set after opening the data, and the seconds per step. `memory` reads every texture
(datasets.read_textures, what train did before); `stream` opens them for row reads (datasets.open_textures).
Run each mode in its own process: ru_maxrss is a process-wide high-water mark.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    """The current resident set (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synth(folder: Path, count: int, size: int = 192, shard_size: int = 1024) -> None:
    from headtex.datasets import ShardWriter, write_index

    writer = ShardWriter(folder, shard_size)
    rng = np.random.default_rng(0)
    for identity in range(count):
        writer.add({"textures": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
                    "identity": np.array([identity], np.int64)})
    writer.flush()
    write_index(folder, writer.entries, split="train", uv_size=size, count=count)


def run(folder: Path, mode: str, steps: int) -> dict:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from headtex.datasets import open_textures, read_mask_bank, read_textures, read_valid
    from headtex.inpaint import VGG16Features
    from headtex.train.cli import read_params
    from headtex.train.core import TextureDataset, Trainer

    torch.set_num_threads(2)
    model_params, config = read_params(REPO / "params.yaml")
    before = rss_mib()
    textures, identities = (read_textures if mode == "memory" else open_textures)(folder)
    opened = rss_mib()
    size = textures.shape[1]
    bank = read_mask_bank(REPO / "data/masks", size)
    valid = read_valid(REPO / "models/template/valid.png", size)
    dataset = TextureDataset(textures, identities, bank, valid, config)
    loader = DataLoader(dataset, config.batch_size, sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)))
    trainer = Trainer(model_params.latent, config, VGG16Features(config.vgg_weights), torch.device("cpu"))
    times = []
    for step, (texture, hole) in enumerate(loader):
        if step == steps:
            break
        tick = time.perf_counter()
        trainer.train_step(texture, hole)
        times.append(time.perf_counter() - tick)
    return {"mode": mode, "textures": len(textures), "dataset_mib": round(textures.shape[0] * int(np.prod(textures.shape[1:])) / 2**20),
            "rss_before_data_mib": round(before), "rss_after_open_mib": round(opened),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_end_mib": round(rss_mib()), "steps": len(times), "seconds_per_step_median": round(float(np.median(times)), 2),
            "batch_size": config.batch_size, "latent": model_params.latent}


if __name__ == "__main__":
    if sys.argv[1] == "synth":
        synth(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        print(json.dumps(run(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
