"""DeepFillv2-style gated-convolution inpainting generator and WGAN patch critic (thesis Appendix B)."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class GatedConv2d(nn.Module):
    """Gated convolution: act(feature) * sigmoid(gate), both halves from one conv with 2*out_ch outputs."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        activation: bool = True,
        norm: bool = True,
    ):
        super().__init__()
        if stride == 1:
            padding = dilation * (kernel_size - 1) // 2  # keeps H, W
        else:
            padding = (kernel_size - stride) // 2  # 4x4 stride 2 -> padding 1, H halves exactly
        self.out_ch = out_ch
        self.conv = nn.Conv2d(in_ch, 2 * out_ch, kernel_size, stride, padding, dilation)
        self.norm = nn.InstanceNorm2d(out_ch, affine=False) if norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature, gate = self.conv(x).split(self.out_ch, dim=1)
        if self.norm is not None:
            feature = self.norm(feature)
        if self.activation:
            feature = F.relu(feature)
        return feature * torch.sigmoid(gate)


def _upsample_gated(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), GatedConv2d(in_ch, out_ch, 3))


class InpaintNet(nn.Module):
    """One coarse or refine stage: gated encoder, dilated gated bottleneck, gated decoder, tanh output."""

    def __init__(self, in_channels: int = 4, out_channels: int = 3, latent: int = 64):
        super().__init__()
        c = latent
        bottleneck = [GatedConv2d(4 * c, 4 * c, 3, dilation=d) for d in (1, 1, 2, 4, 8, 16, 1, 1)]
        self.layers = nn.Sequential(
            GatedConv2d(in_channels, c, 7, norm=False),
            GatedConv2d(c, 2 * c, 4, stride=2),
            GatedConv2d(2 * c, 4 * c, 3),
            GatedConv2d(4 * c, 4 * c, 4, stride=2),
            *bottleneck,
            _upsample_gated(4 * c, 2 * c),
            GatedConv2d(2 * c, 2 * c, 3),
            _upsample_gated(2 * c, c),
            GatedConv2d(c, out_channels, 7, activation=False, norm=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(x))


class Generator(nn.Module):
    """Coarse-to-refine inpainting generator; image in [-1,1] (N,3,H,W), hole (N,1,H,W) with 1 = missing."""

    def __init__(self, latent: int = 64):
        super().__init__()
        self.coarse = InpaintNet(4, 3, latent)
        self.refine = InpaintNet(4, 3, latent)

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (coarse_out, refined_out), both (N,3,H,W) in [-1,1]."""
        coarse_out = self.forward_coarse(image, hole)
        return coarse_out, self.forward_refine(image, hole, coarse_out)

    def forward_coarse(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The coarse output alone (what the thesis ships): half the work of forward."""
        h, w = image.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"Generator needs H and W divisible by 4 (two stride-2 stages), got {h}x{w}")
        # Holes are filled with 1 (white) so the coarse net sees a constant, not leaked pixels.
        return self.coarse(torch.cat([image * (1 - hole) + hole, hole], dim=1))

    def forward_refine(self, image: torch.Tensor, hole: torch.Tensor, coarse_out: torch.Tensor) -> torch.Tensor:
        """The refined output given the coarse one (forward = forward_coarse then forward_refine)."""
        return self.refine(torch.cat([image * (1 - hole) + coarse_out * hole, hole], dim=1))


class Critic(nn.Module):
    """Spectral-normalised WGAN patch critic on cat(image, hole); returns a (N,1,h,w) score map."""

    def __init__(self, latent: int = 64):
        super().__init__()
        c = latent
        self.first = spectral_norm(nn.Conv2d(4, c, 7, 1, 3))
        widths = [c, 2 * c, 4 * c, 4 * c, 4 * c]
        self.downs = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(i, o, 4, 2, 1)), nn.InstanceNorm2d(o, affine=False))
            for i, o in zip(widths[:-1], widths[1:])
        )
        self.last = spectral_norm(nn.Conv2d(4 * c, 1, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.first(x))
        for down in self.downs:
            x = F.relu(down(x))
        return self.last(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Xavier-normal (gain 0.02) conv weights and zero biases, in place; returns the module."""
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, nn.Conv2d):
                continue
            if parametrize.is_parametrized(m, "weight"):
                # m.weight is recomputed from the stored original under spectral norm
                weight = m.parametrizations.weight.original
            else:
                weight = m.weight
            nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
