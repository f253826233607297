"""Inpainting networks (thesis Appendix B's DeepFillv2 and the symmetric residual symres), losses, fills."""

from .losses import composite, critic_loss, generator_gan_loss, generator_loss, masked_l1, perceptual_loss
from .networks import ARCHS, Critic, GatedConv2d, Generator, InpaintNet, SymmetricResidual, build_generator, init_weights
from .vgg import VGG16Features

__all__ = [
    "ARCHS",
    "SymmetricResidual",
    "build_generator",
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
