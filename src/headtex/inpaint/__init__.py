"""DeepFillv2-style gated-conv inpainting (thesis Appendix B)."""

from .losses import composite, critic_loss, generator_gan_loss, generator_loss, masked_l1, perceptual_loss
from .networks import Critic, GatedConv2d, Generator, InpaintNet, init_weights
from .vgg import VGG16Features

__all__ = [
    "Critic",
    "GatedConv2d",
    "Generator",
    "InpaintNet",
    "VGG16Features",
    "composite",
    "critic_loss",
    "generator_gan_loss",
    "generator_loss",
    "init_weights",
    "masked_l1",
    "perceptual_loss",
]
