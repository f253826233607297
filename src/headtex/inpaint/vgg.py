"""Frozen VGG-16 feature extractor (torchvision layout, up to relu4_3) for the perceptual loss."""

from pathlib import Path

import torch
import torch.nn as nn

# torchvision vgg16 "D" config; "M" = 2x2 max pool
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
RELU4_3 = 22  # index of relu4_3 in torchvision's vgg16.features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Without ImageNet weights every user of the perceptual loss (train, evaluate) builds this one random VGG,
# so that perceptual losses stay comparable across experiments and between training and evaluation.
RANDOM_SEED = 0


def _vgg16_layers(last_index: int) -> list[nn.Module]:
    """torchvision vgg16.features layers 0..last_index, same order so state-dict keys match."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return layers[: last_index + 1]


class VGG16Features(nn.Module):
    """VGG-16 relu4_3 features of images in [-1,1]; frozen, eval mode; random fixed-seed init without weights."""

    def __init__(self, weights_path: str | Path | None = None, seed: int = RANDOM_SEED):
        super().__init__()
        self.features = nn.Sequential(*_vgg16_layers(RELU4_3))
        # non-persistent so the state dict holds exactly torchvision's features.* keys
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights_path is None:
            self._random_init(seed)
            self.pretrained = False
        else:
            self._load(Path(weights_path))
            self.pretrained = True
        self.requires_grad_(False)
        self.eval()

    def _random_init(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                    nn.init.zeros_(m.bias)

    def _load(self, path: Path) -> None:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a valid torch weights file ({type(e).__name__}: {e})") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}")
        if any(str(k).startswith("features.") for k in loaded):
            state = {k: v for k, v in loaded.items() if k.startswith("features.")}
        else:
            state = {f"features.{k}": v for k, v in loaded.items()}  # a bare vgg16.features state dict
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{path}: not a VGG-16 features state dict, missing keys {missing[:4]}")
        for k, ref in expected.items():
            v = state[k]
            if not isinstance(v, torch.Tensor) or v.shape != ref.shape:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"{path}: {k} has shape {got}, expected {tuple(ref.shape)}")
        # layers past relu4_3 (features.24+) and the classifier are ignored on purpose
        self.load_state_dict({k: state[k] for k in expected}, strict=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> relu4_3 features (N,512,H/8,W/8)."""
        x = ((image + 1) / 2 - self.mean) / self.std
        return self.features(x)
