"""Training speed at the thesis' model size (latent 64, 192x192): timed by `make bench`; `make test` runs one
untimed step at the shipped size (latent 16) for the assert.

The same figure on any machine (GPU included): `headtex bench train --latent 64 --batch-size N --steps K`.
"""
import numpy as np
import torch

from headtex.inpaint import VGG16Features
from headtex.train.core import Trainer, TrainParams
from conftest import params_for

BATCH = 2


def test_train_step_latent64_192(benchmark):
    """One full training step (critic, generator, VGG perceptual) at 192x192 gives finite losses; timed by make bench."""
    config = params_for(TrainParams, "train", batch_size=BATCH, precision="auto")
    latent = 64 if benchmark.enabled else 16
    trainer = Trainer(latent, config, VGG16Features(), torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(0)
    texture = torch.from_numpy(rng.integers(0, 256, (BATCH, 192, 192, 3), dtype=np.uint8))
    hole = torch.zeros(BATCH, 192, 192)
    hole[:, 64:128, 64:128] = 1
    losses = benchmark.pedantic(trainer.train_step, args=(texture, hole), rounds=3, warmup_rounds=1)
    if benchmark.enabled:
        benchmark.extra_info["images_per_second"] = BATCH / benchmark.stats.stats.median
        benchmark.extra_info["precision"] = str(trainer.dtype)
    assert np.isfinite(losses["g_total"])
