"""Inpainting losses: masked L1, VGG perceptual, WGAN critic/generator, and the generator total."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vgg import VGG16Features


def composite(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Known pixels from target, hole pixels (hole = 1) from output."""
    return target * (1 - hole) + output * hole


def masked_l1(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (l1_all, l1_missing): |composite - target| summed, over all pixel-channels and over missing ones."""
    diff = (composite(output, target, hole) - target).abs()
    l1_all = diff.mean()
    n_missing = hole.expand_as(target).sum()
    # with no hole diff.sum() is exactly 0, so the clamp just avoids 0/0
    l1_missing = diff.sum() / n_missing.clamp(min=1)
    return l1_all, l1_missing


L1_WEIGHTINGS = ("pixels", "hole")  # train.l1_weighting


def hole_normalised_l1(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Per sample the mean |output - target| over its hole's pixel-channels, then the mean over samples: every
    sample weighs alike, however small its hole (a sample without a hole counts 0)."""
    diff = ((output - target).abs() * hole).flatten(1).sum(1)
    return (diff / (hole.flatten(1).sum(1) * target.shape[1]).clamp(min=1)).mean()


def perceptual_loss(vgg: VGG16Features, output_comp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between VGG-16 relu4_3 features."""
    return F.l1_loss(vgg(output_comp), vgg(target))


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss: -E[D(real)] + E[D(fake)]; fake is detached.

    Real and fake go through the critic as one batch (instance norm is per sample, so the scores are the
    same): one forward per backward is what DistributedDataParallel supports, and it is faster.
    """
    both = torch.cat([torch.cat([real, hole], dim=1), torch.cat([fake.detach(), hole], dim=1)])
    real_score, fake_score = critic(both).chunk(2)
    return -real_score.mean() + fake_score.mean()


def generator_gan_loss(critic: nn.Module, fake: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: -E[D(fake)]."""
    return -critic(torch.cat([fake, hole], dim=1)).mean()


def generator_loss(
    coarse_out: torch.Tensor,
    refined_out: torch.Tensor,
    target: torch.Tensor,
    hole: torch.Tensor,
    critic: nn.Module,
    vgg: VGG16Features,
    lambda_l1: float = 100.0,
    lambda_perc: float = 10.0,
    lambda_gan: float = 10.0,
    l1_weighting: str = "pixels",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total G loss = l1*(L1_coarse + L1_refined) + perc*perceptual + gan*GAN; returns (total, detached parts).

    l1_weighting `pixels` (the thesis): the L1 terms are means over every pixel of the batch, so a sample weighs
    by its hole's area; `hole`: each sample's L1 over its own hole (hole_normalised_l1), so small holes count
    as much as large ones. The logged parts are the same either way.
    """
    first_l1, first_l1_missing = masked_l1(coarse_out, target, hole)
    second_l1, second_l1_missing = masked_l1(refined_out, target, hole)
    if l1_weighting == "hole":
        l1_terms = hole_normalised_l1(coarse_out, target, hole) + hole_normalised_l1(refined_out, target, hole)
    elif l1_weighting == "pixels":
        l1_terms = first_l1 + second_l1
    else:
        raise ValueError(f"unknown l1_weighting {l1_weighting!r} (choose from {', '.join(L1_WEIGHTINGS)})")
    refined_comp = composite(refined_out, target, hole)
    # a term weighted 0 is not computed (the VGG and the critic are most of a step's cost)
    zero = refined_out.new_zeros(())
    perceptual = perceptual_loss(vgg, refined_comp, target) if lambda_perc else zero
    gan = generator_gan_loss(critic, refined_comp, hole) if lambda_gan else zero
    total = lambda_l1 * l1_terms + lambda_perc * perceptual + lambda_gan * gan
    parts = {
        "first_mask_l1": first_l1,
        "second_mask_l1": second_l1,
        "first_mask_l1_missing": first_l1_missing,
        "second_mask_l1_missing": second_l1_missing,
        "perceptual": perceptual,
        "gan": gan,
    }
    # Detached tensors, not floats: reading a value is a device sync, left to the caller (once per step).
    return total, {name: value.detach().float() for name, value in parts.items()}
