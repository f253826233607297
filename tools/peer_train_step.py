"""Training step rate side by side with the zhaoyuzhi/deepfillv2 port, one process, same input and config.

    python tools/peer_train_step.py PEER_DIR [--rounds 8] [--latent 32] [--compile]

PEER_DIR holds the port's `deepfillv2/network.py` and `network_module.py` (not part of headtex; e.g.
`git --git-dir=<mirror of zhaoyuzhi/deepfillv2> archive HEAD deepfillv2 | tar -x -C /tmp/peer`).
The peer's step is its trainer.py's WGAN step (critic update, then generator update with 100·L1 on both
stages, 10·perceptual, 10·GAN), on its own GatedGenerator / PatchDiscriminator / PerceptualNet; headtex's is
`Trainer.train_step` with the thesis weights (the same losses) at `model.arch: deepfillv2`. 192², batch 2,
2 threads, oneDNN for both. The steps are interleaved round by round (peer, headtex fp32, headtex bf16, ...)
so a change in the machine's load hits every configuration alike; prints the median s/step of each and the
ratios, one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def smooth_batch(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random colours (uint8 NHWC) and a hole over the middle ninth: speed depends only on the sizes."""
    coarse = np.random.default_rng(0).integers(0, 256, (batch, 6, 6, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, size // 6 + 1, 1), size // 6 + 1, 2)[:, :size, :size]
    hole = torch.zeros(batch, size, size)
    hole[:, size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1
    return torch.from_numpy(texture.copy()), hole


def peer_step(peer_dir: Path, latent: int, texture: torch.Tensor, hole: torch.Tensor):
    """The port's WGAN_trainer step, written from its trainer.py's loss, on its own networks."""
    sys.path.insert(0, str(peer_dir))
    import network as peer  # the port's module

    opt = argparse.Namespace(in_channels=4, out_channels=3, latent_channels=latent, pad_type="zero",
                             activation="lrelu", norm="in", init_type="xavier", init_gain=0.02)
    generator, critic, vgg = peer.GatedGenerator(opt), peer.PatchDiscriminator(opt), peer.PerceptualNet()
    peer.weights_init(generator, "xavier", 0.02)
    peer.weights_init(critic, "xavier", 0.02)
    for parameter in vgg.parameters():
        parameter.requires_grad = False
    opt_g = torch.optim.Adam(generator.parameters(), 1e-4, (0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), 4e-4, (0.5, 0.999))
    image, mask = texture.permute(0, 3, 1, 2).float() / 255.0, hole[:, None]
    l1 = torch.nn.L1Loss()

    def step() -> None:
        opt_d.zero_grad()
        with contextlib.redirect_stdout(io.StringIO()):  # its forward prints tensor shapes
            first, second = generator(image, mask)
        first_out = image * (1 - mask) + first * mask
        second_out = image * (1 - mask) + second * mask
        loss_d = -critic(image, mask).mean() + critic(second_out.detach(), mask).mean()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss = (100 * l1(first_out, image) + 100 * l1(second_out, image)
                + 10 * l1(vgg(second_out), vgg(image)) - 10 * critic(second_out, mask).mean())
        loss.backward()
        opt_g.step()
        float(loss.detach())  # one host sync per step, as headtex's

    return step, sum(p.numel() for p in generator.parameters())


def headtex_step(latent: int, precision: str, compile: bool, texture: torch.Tensor, hole: torch.Tensor):
    """headtex's Trainer step at the thesis' losses (params.yaml's train section otherwise)."""
    sys.path.insert(0, str(REPO / "src"))
    from headtex.inpaint import VGG16Features
    from headtex.params import load_params, section
    from headtex.train.core import Trainer, TrainParams

    config = section(load_params(REPO / "params.yaml"), "train", TrainParams)
    config = dataclasses.replace(config, batch_size=texture.shape[0], precision=precision, deterministic=False,
                                 compile=compile, lambda_l1=100.0, lambda_perceptual=10.0, lambda_gan=10.0)
    trainer = Trainer(latent, config, VGG16Features(), torch.device("cpu"), arch="deepfillv2",
                      size=texture.shape[1])
    return (lambda: trainer.train_step(texture, hole)), sum(p.numel() for p in trainer.generator.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time headtex with torch.compile (bf16)")
    args = parser.parse_args()
    if not (args.peer_dir / "network.py").is_file():
        sys.exit(f"error: {args.peer_dir}/network.py not found: give the port's deepfillv2/ folder")
    torch.set_num_threads(args.threads)
    texture, hole = smooth_batch(args.batch, args.size)
    steps = {}
    steps["peer_fp32"], peer_params = peer_step(args.peer_dir, args.latent, texture, hole)
    steps["headtex_fp32"], headtex_params = headtex_step(args.latent, "fp32", False, texture, hole)
    steps["headtex_bf16"], _ = headtex_step(args.latent, "bf16", False, texture, hole)
    if args.compile:
        steps["headtex_bf16_compiled"], _ = headtex_step(args.latent, "bf16", True, texture, hole)
    for step in steps.values():  # warm-up: allocation, oneDNN primitive creation, compilation
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            tick = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - tick)
    median = {name: float(np.median(times)) for name, times in seconds.items()}
    print(json.dumps({
        "config": f"deepfillv2 latent {args.latent}, {args.size}x{args.size}, batch {args.batch}, "
                  f"{args.threads} threads, oneDNN, {args.rounds} interleaved rounds",
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "generator_parameters": {"peer": peer_params, "headtex": headtex_params},
        "median_s_per_step": {name: round(value, 3) for name, value in median.items()},
        "all_s_per_step": {name: [round(t, 3) for t in times] for name, times in seconds.items()},
        "peer_over_headtex": {name: round(median["peer_fp32"] / value, 2)
                              for name, value in median.items() if name != "peer_fp32"},
    }))


if __name__ == "__main__":
    main()
