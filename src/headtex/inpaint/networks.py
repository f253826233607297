"""The inpainting generators (`model.arch`) and the WGAN patch critic.

deepfillv2: the thesis' gated-convolution coarse-to-refine generator (Appendix B), unchanged.
symres: a small gated U-Net that starts from the classical mirror-guided Poisson fill (`fills.fill_poisson_mirror`) and learns
a residual over it, seeing the mirrored texture and mask (the UV layout is symmetric about u = 0.5), the mean
training texture and the head's valid region; its residual head starts at zero, so an untrained symres
completes exactly like the classical fill and training starts at that baseline.
symres2: the same network also given cv2's Navier-Stokes fill; it predicts a per-texel blend weight between the
two fills (Navier-Stokes wins on thin strokes, the mirror-guided fill on large holes) plus a residual. Its head
starts at zero: weight 1/2 (the plain average of the fills, which beats both: docs/RESULTS.md) and no residual.
symres3: symres2's fills, blend and residual, computed in the photo's own colours and at half resolution. Every
input is normalised by the known texels' luminance and chroma statistics (per texture), and the residual's chroma is
scaled by the known texels' chroma spread: a grey photo completes grey, a colour cast carries into the hole. The
body runs on 2x2 texel blocks (pixel unshuffle/shuffle): a quarter of symres2's cost per layer.
"""

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from headtex.inpaint.fills import fill_opencv, fill_poisson_mirror

ARCHS = ("deepfillv2", "symres", "symres2", "symres3", "blend3", "blend3x")


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


class SymmetricResidual(nn.Module):
    """symres: output = mirror-guided Poisson fill + a learned residual (zero at initialisation).

    Input channels (12): the fill (3), hole (1), the mirrored known texels (3) and mirrored hole (1), the
    mean training texture (3) and the valid region (1); the last two are buffers set by `set_prior` (saved in
    the model file). Encoder c -> 2c -> 4c (two stride-2 gated convs), dilated gated bottleneck at 1/4,
    gated decoder with skip connections, a plain 3x3 conv head. One stage: `forward` returns the output twice
    (coarse = refined), so every user of the two-output interface works unchanged.

    `blend` (symres2): 15 input channels, the Navier-Stokes fill (3) right after the mirror-guided one, and a 4th
    head output, the logit of a per-texel weight w: output = w * Navier-Stokes + (1 - w) * mirror-Poisson + residual.
    """

    def __init__(self, latent: int, size: int, blend: bool = False):
        super().__init__()
        c = latent
        self.blend = blend
        self.register_buffer("mean_texture", torch.zeros(1, 3, size, size))
        self.register_buffer("valid", torch.ones(1, 1, size, size))
        self.enc1 = GatedConv2d(15 if blend else 12, c, 5, norm=False)
        self.enc2 = GatedConv2d(c, 2 * c, 4, stride=2)
        self.enc3 = GatedConv2d(2 * c, 4 * c, 4, stride=2)
        self.middle = nn.Sequential(*(GatedConv2d(4 * c, 4 * c, 3, dilation=d) for d in (2, 4, 8, 1)))
        self.dec2 = GatedConv2d(4 * c + 2 * c, 2 * c, 3)
        self.dec1 = GatedConv2d(2 * c + c, c, 3)
        self.head = nn.Conv2d(c, 4 if blend else 3, 3, padding=1)
        self.head.zero_init = True  # init_weights keeps it at zero: output = the classical fill(s' average) at step 0
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def set_prior(self, mean_texture: np.ndarray, valid: np.ndarray) -> None:
        """The mean training texture (U,U,3 uint8) and the head's valid region (U,U bool) the net is given."""
        with torch.no_grad():
            mean = torch.from_numpy(np.ascontiguousarray(mean_texture)).permute(2, 0, 1)[None].float() / 127.5 - 1
            self.mean_texture.copy_(mean)
            self.valid.copy_(torch.from_numpy(np.asarray(valid, bool))[None, None].float())

    @torch.no_grad()
    def prior(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The classical fills of the hole (known texels unchanged), in [-1,1] like `image`: mirror-guided Poisson
        (N,3,H,W), and for symres2 then Navier-Stokes, (N,6,H,W)."""
        known = ((image.detach().float() * (1 - hole) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        textures = known.permute(0, 2, 3, 1).cpu().numpy()
        regions = (hole[:, 0] > 0.5).cpu().numpy()
        # Every fill of every texture is its own task on two threads (SuperLU and cv2 release the GIL): the fills
        # cost most of a forward pass, and one texture's two fills run side by side. A pool per call: nothing
        # outlives it into a forked worker.
        fills = [fill_poisson_mirror] + ([partial(fill_opencv, method="navier_stokes")] if self.blend else [])
        with ThreadPoolExecutor(max_workers=2) as pool:
            tasks = [[pool.submit(fill, t, r) for fill in fills] for t, r in zip(textures, regions)]
            filled = np.stack([np.concatenate([task.result() for task in per_texture], axis=2) for per_texture in tasks])
        return torch.from_numpy(filled).to(image.device).permute(0, 3, 1, 2).float() / 127.5 - 1

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (output, output): one stage, in the generator's two-output interface."""
        out = self.forward_coarse(image, hole)
        return out, out

    def forward_coarse(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The completed image (N,3,H,W) in [-1,1]: fill + residual."""
        if image.shape[-2:] != self.valid.shape[-2:]:
            raise ValueError(f"symres was built for {tuple(self.valid.shape[-2:])} textures, got {tuple(image.shape[-2:])}")
        fills = self.prior(image, hole)
        fill = fills[:, :3]
        known = image * (1 - hole)
        n = len(image)
        x = torch.cat([fills, hole, known.flip(-1), hole.flip(-1), self.mean_texture.expand(n, -1, -1, -1),
                       self.valid.expand(n, -1, -1, -1)], dim=1)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        middle = self.middle(self.enc3(e2))
        d2 = self.dec2(torch.cat([F.interpolate(middle, scale_factor=2, mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], dim=1))
        head = self.head(d1)
        if self.blend:
            weight = torch.sigmoid(head[:, 3:])  # on Navier-Stokes; 1/2 at initialisation
            return (fill + weight * (fills[:, 3:] - fill) + head[:, :3]).clamp(-1, 1)
        return (fill + head).clamp(-1, 1)

    def forward_refine(self, image: torch.Tensor, hole: torch.Tensor, coarse_out: torch.Tensor) -> torch.Tensor:
        """One stage: the refined output is the coarse one."""
        return coarse_out


# Opponent colours: luminance and two chroma axes, so that chroma can be scaled apart from luminance (grey = 0 chroma).
OPPONENT = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1 / 2, -1 / 2, 0.0], [-1 / 4, -1 / 4, 1 / 2]])
MIN_SPREAD = 0.02  # floor of the luminance and chroma spreads inputs are divided by ([-1, 1] units: ~2.5 levels)


def _opponent(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", OPPONENT.to(image), image)


def _rgb(opponent: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(OPPONENT).to(opponent), opponent)


def colour_statistics(image: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per texture, over the `known` texels (N,1,H,W; 1 = known): the opponent-colour mean (N,3,1,1) and spread
    (N,3,1,1): luminance std, then one chroma std for both chroma axes (hue is not distorted)."""
    weight = known / known.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    opponent = _opponent(image)
    mean = (opponent * weight).sum(dim=(2, 3), keepdim=True)
    variance = ((opponent - mean) ** 2 * weight).sum(dim=(2, 3), keepdim=True)
    chroma = variance[:, 1:].mean(dim=1, keepdim=True)
    return mean, torch.cat([variance[:, :1], chroma, chroma], dim=1).sqrt()


class ColourResidual(SymmetricResidual):
    """symres3: symres2 in the texture's own colours, its body on 2x2 texel blocks.

    The two fills are blended per texel by one weight for all channels (a blend of grey fills is grey); the
    residual is predicted in normalised opponent colours and scaled back by the known texels' spreads, its chroma by
    their chroma spread, which is 0 for a grey texture. The mean training texture is normalised by its own
    statistics over the same known texels: it lends the net the head's layout, not its skin colour.
    """

    def __init__(self, latent: int, size: int, outputs_per_texel: int = 4):
        nn.Module.__init__(self)
        if size % 8:
            raise ValueError(f"symres3 needs a texture side divisible by 8 (2x2 blocks, two stride-2 stages), got {size}")
        c = latent
        self.blend = True
        self.register_buffer("mean_texture", torch.zeros(1, 3, size, size))
        self.register_buffer("valid", torch.ones(1, 1, size, size))
        self.enc1 = GatedConv2d(15 * 4, c, 3, norm=False)
        self.enc2 = GatedConv2d(c, 2 * c, 4, stride=2)
        self.enc3 = GatedConv2d(2 * c, 4 * c, 4, stride=2)
        self.middle = nn.Sequential(*(GatedConv2d(4 * c, 4 * c, 3, dilation=d) for d in (1, 2, 4, 1)))
        self.dec2 = GatedConv2d(4 * c + 2 * c, 2 * c, 3)
        self.dec1 = GatedConv2d(2 * c + c, c, 3)
        # per texel of a 2x2 block: symres3's 3 residual channels + 1 blend logit, blend3's one logit per candidate
        self.head = nn.Conv2d(c, outputs_per_texel * 4, 3, padding=1)
        self.head.zero_init = True  # symres2's start: the even blend of the two fills, no residual
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def colour_head(self, image: torch.Tensor, hole: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The body's pass in the known texels' colours: (fills (N,6,H,W), the known texels' opponent mean and
        spread, the mean texture normalised by its own statistics over them (the layout), the head's output per
        texel)."""
        if image.shape[-2:] != self.valid.shape[-2:]:
            raise ValueError(f"{type(self).__name__} was built for {tuple(self.valid.shape[-2:])} textures, got "
                             f"{tuple(image.shape[-2:])}")
        fills = self.prior(image, hole)
        known = (1 - hole) * self.valid
        mean, spread = colour_statistics(image, known)
        scale = spread.clamp(min=MIN_SPREAD)

        def normalised(texture: torch.Tensor) -> torch.Tensor:
            return (_opponent(texture) - mean) / scale

        prior_mean, prior_spread = colour_statistics(self.mean_texture.expand(len(image), -1, -1, -1), known)
        layout = (_opponent(self.mean_texture) - prior_mean) / prior_spread.clamp(min=MIN_SPREAD)
        mirrored = (normalised(image) * (1 - hole)).flip(-1)
        x = torch.cat([normalised(fills[:, :3]), normalised(fills[:, 3:]), hole, mirrored, hole.flip(-1), layout,
                       self.valid.expand(len(image), -1, -1, -1)], dim=1)
        e1 = self.enc1(F.pixel_unshuffle(x, 2))
        e2 = self.enc2(e1)
        middle = self.middle(self.enc3(e2))
        d2 = self.dec2(torch.cat([F.interpolate(middle, scale_factor=2, mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], dim=1))
        return fills, mean, spread, layout, F.pixel_shuffle(self.head(d1), 2)

    def forward_coarse(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The completed image (N,3,H,W) in [-1,1]: the fills' blend + residual, in the known texels' colours."""
        fills, _, spread, _, head = self.colour_head(image, hole)
        weight = torch.sigmoid(head[:, 3:])  # on Navier-Stokes; 1/2 at initialisation
        residual = _rgb(head[:, :3] * spread)  # the unclamped spread: no chroma is added to a grey texture
        fill = fills[:, :3]
        return (fill + weight * (fills[:, 3:] - fill) + residual).clamp(-1, 1)


class FillBlend(ColourResidual):
    """blend3: symres3's body choosing, per texel, a convex blend of classical fills; nothing of its own is painted.

    The candidates: the mirror-guided Poisson fill, Navier-Stokes and (blend3x) the mean training texture carried
    into the known texels' colours. A learned residual beats them on generated people's truth but costs on real
    photos (docs/RESULTS.md): a blend of the texture's own fills cannot paint the training people's features in.
    """

    def __init__(self, latent: int, size: int, mean_fill: bool = False):
        super().__init__(latent, size, outputs_per_texel=3 if mean_fill else 2)
        self.mean_fill = mean_fill

    def forward_coarse(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The completed image (N,3,H,W) in [-1,1]: a per-texel softmax blend of the candidate fills."""
        fills, mean, spread, layout, head = self.colour_head(image, hole)
        candidates = [fills[:, :3], fills[:, 3:]]
        if self.mean_fill:
            candidates.append(_rgb(layout * spread + mean))  # the unclamped spread: grey stays grey
        weights = torch.softmax(head, dim=1)
        return sum(weights[:, k:k + 1] * candidate for k, candidate in enumerate(candidates)).clamp(-1, 1)


def build_generator(arch: str, latent: int, size: int) -> nn.Module:
    """The generator of `model.arch` at `latent` channels for `size` x `size` textures."""
    if arch == "deepfillv2":
        return Generator(latent)
    if arch == "symres3":
        return ColourResidual(latent, size)
    if arch in ("blend3", "blend3x"):
        return FillBlend(latent, size, mean_fill=arch == "blend3x")
    if arch in ("symres", "symres2"):
        return SymmetricResidual(latent, size, blend=arch == "symres2")
    raise ValueError(f"unknown model arch {arch!r} (choose from {', '.join(ARCHS)})")


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
    """Xavier-normal (gain 0.02) conv weights (zero for convs marked zero_init) and zero biases, in place."""
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, nn.Conv2d):
                continue
            if parametrize.is_parametrized(m, "weight"):
                # m.weight is recomputed from the stored original under spectral norm
                weight = m.parametrizations.weight.original
            else:
                weight = m.weight
            if getattr(m, "zero_init", False):
                nn.init.zeros_(weight)  # a residual head that must start at zero
            else:
                nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
