"""`train` stage: the gated-convolution inpainting GAN (thesis 3.4, 4.1, App. B) trained with dvclive logging."""
from headtex.train.core import (
    ModelParams, TextureDataset, Trainer, TrainParams, hole_from_visible, inpaint, sample_grid, training_example,
)
from headtex.train.files import load_inpainter

__all__ = ["ModelParams", "TextureDataset", "Trainer", "TrainParams", "hole_from_visible", "inpaint",
           "load_inpainter", "sample_grid", "training_example"]
