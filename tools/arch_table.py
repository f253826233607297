"""Inpainting architectures at equal CPU training time, scored on synthetic truth and on real faces: one table.

    python tools/arch_table.py DATA_REPO [--test TEST_REPO] [--cpu-seconds 600] [--peer PEER_DIR] --out DIR

Trains, one after the other in this process, each of `model.arch` deepfillv2, symres2 and symres3 from scratch
(train.seed) and, with --peer, one peer network run from its own code (PEER_DIR/peer.py's `build(size)`: not part of
headtex, e.g. MI-GAN from github.com/Picsart-AI-Research/MI-GAN wrapped to take (image, hole)), each for the same
process CPU time (time.process_time: every thread counted) on DATA_REPO's data/textures/train with params.yaml's
train settings (L1 only, as the shipped model). Each is then scored as `headtex evaluate` scores the shipped model:
TEST_REPO's data/textures/test under the same stratified masks, and every face of the real photographs
(evaluate.real_photos) with the same holes; the classical fills beside them. Writes DIR/arch_table.json and prints a
Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from headtex.datasets import mean_texture, open_textures, read_mask_bank, read_textures, read_valid
from headtex.evaluate.cli import (
    BASELINES, EvaluateParams, candidate_masks, classical_fills, group_table, real_face_draws, real_face_scores,
    score_arrays,
)
from headtex.evaluate.core import assign_masks, coverage, region_scores
from headtex.fitting import FitParams
from headtex.inpaint import VGG16Features
from headtex.inpaint.fills import masked_input
from headtex.inpaint.model import inpaint, prepare_batch
from headtex.masking import missing_region
from headtex.params import load_params, section
from headtex.train.core import TextureDataset, Trainer, TrainParams

ARCH_SETTINGS = {  # arch: (model.latent, train.lr_g): each at the learning rate measured best for it (docs/RESULTS.md)
    "deepfillv2": (16, 1e-3),
    "symres2": (16, 2e-4),
    "symres3": (24, 2e-4),
    "peer": (None, 2e-4),
}


def train_for(trainer: Trainer, dataset: TextureDataset, batch_size: int, cpu_seconds: float, seed: int) -> dict:
    """Train until the process has used `cpu_seconds` of CPU; the steps, images and wall time it took."""
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    steps, epoch, loss = 0, 0, float("nan")
    while time.process_time() - started_cpu < cpu_seconds:
        dataset.set_epoch(epoch)
        trainer.set_epoch(0)  # one constant learning rate: the schedule is not what is compared
        order = np.random.default_rng([seed, epoch]).permutation(len(dataset))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            textures, holes, scored = zip(*(dataset[int(i)] for i in order[start:start + batch_size]))
            loss = trainer.train_step(torch.stack(textures), torch.stack(holes), torch.stack(scored))["first_mask_l1"]
            steps += 1
            if time.process_time() - started_cpu >= cpu_seconds:
                break
        epoch += 1
    return {"steps": steps, "images": steps * batch_size, "cpu_seconds": round(time.process_time() - started_cpu, 1),
            "wall_seconds": round(time.perf_counter() - started_wall, 1), "last_l1": round(loss, 5)}


@torch.no_grad()
def inference_seconds(generator: torch.nn.Module, masked: np.ndarray, visible: np.ndarray, valid: np.ndarray) -> float:
    """Median seconds to complete one texture at batch 1 on one thread (the prior's fills included)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image, hole = prepare_batch(masked[:1], visible[:1], valid)
    generator.forward_coarse(image, hole)
    times = []
    for _ in range(7):
        tick = time.perf_counter()
        generator.forward_coarse(image, hole)
        times.append(time.perf_counter() - tick)
    torch.set_num_threads(threads)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_repo", type=Path, help="a headtex checkout whose data/textures/train and data/masks train")
    parser.add_argument("--test", type=Path, default=Path("."), help="checkout whose data/textures/test is scored")
    parser.add_argument("--cpu-seconds", type=float, default=600.0)
    parser.add_argument("--peer", type=Path, help="folder holding peer.py with build(size) -> nn.Module")
    parser.add_argument("--archs", default="deepfillv2,symres2,symres3,peer")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core each: CPU seconds are work, not a second thread spinning at a barrier
    params = load_params(Path("params.yaml"))
    config = dataclasses.replace(section(params, "train", TrainParams), init_from=None, deterministic=False)
    evaluation = section(params, "evaluate", EvaluateParams)
    fitting = section(params, "pafs", FitParams, partial=True)

    textures, identities = open_textures(args.data_repo / "data/textures/train")
    size = textures.shape[1]
    valid = read_valid(args.data_repo / "models/template/valid.png", size)
    bank = read_mask_bank(args.data_repo / "data/masks", size)
    mean = mean_texture(textures)
    dataset = TextureDataset(textures, identities, bank, valid, config)

    test, _ = read_textures(args.test / "data/textures/test")
    candidates, kinds = candidate_masks(args.test / "data/masks", size, evaluation)
    shares = np.array([coverage(mask, valid) for mask in candidates])
    owner, chosen, buckets, _ = assign_masks(len(test), shares, kinds, evaluation.bucket_edges,
                                             evaluation.masks_per_texture, evaluation.seed)
    truth, visible = test[owner], candidates[chosen]
    regions = np.stack([missing_region(mask, valid) for mask in visible])
    masked = np.stack([masked_input(t, r) for t, r in zip(truth, regions)])
    synthetic = classical_fills(masked, regions, mean, 1)
    real_bank = candidates[kinds == 0]
    draws = real_face_draws(evaluation, fitting, args.test / "models/template", real_bank, valid)
    real = classical_fills(draws.masked, draws.regions, mean, 1)

    rows = {}
    for arch in args.archs.split(","):
        latent, lr = ARCH_SETTINGS[arch]
        run_config = dataclasses.replace(config, lr_g=lr)
        trainer = Trainer(latent or 16, run_config, VGG16Features(None), torch.device("cpu"),
                          arch="symres2" if arch == "peer" else arch, size=size)
        if arch == "peer":
            sys.path.insert(0, str(args.peer))
            from peer import build  # the peer's own code, wrapped to take (image, hole)

            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                trainer.generator = trainer.generator_run = build(size)
            trainer.opt_g = torch.optim.Adam(trainer.generator.parameters(), lr, (config.b1, config.b2))
        trainer.set_prior(mean, valid)
        trainer.generator.train()
        print(f"{arch}: training for {args.cpu_seconds:.0f} CPU seconds", flush=True)
        facts = train_for(trainer, dataset, config.batch_size, args.cpu_seconds, config.seed)
        generator = trainer.generator
        facts["parameters"] = int(getattr(generator, "n_params_effective", sum(p.numel() for p in generator.parameters())))
        generator.eval()
        synthetic[arch] = inpaint(generator, masked, visible, valid)
        real[arch] = inpaint(generator, draws.masked, draws.given, valid)
        facts["inference_seconds"] = round(inference_seconds(generator, masked, visible, valid), 4)
        rows[arch] = facts
        print(f"{arch}: {facts}", flush=True)

    scores = {m: score_arrays([region_scores(out[i], truth[i], regions[i]) for i in range(len(truth))])
              for m, out in synthetic.items()}
    table = {name: group_table(buckets == b, owner, scores, evaluation)
             for b, name in enumerate(evaluation.bucket_names)}
    table["overall"] = group_table(np.ones(len(truth), bool), owner, scores, evaluation)
    faces = {arch: real_face_scores(draws, real, evaluation, arch) for arch in rows}
    result = {"cpu_seconds": args.cpu_seconds, "train_textures": len(textures), "training": rows,
              "synthetic": {name: {m: {k: t[m][k] for k in ("psnr", "ssim")} for m in [*rows, *BASELINES]}
                            for name, t in table.items()},
              "real_faces": {arch: {"psnr": f["overall"][arch]["psnr"], "interval_95": f["overall"][arch]["interval_95"]["psnr"],
                                    "ssim": f["overall"][arch]["ssim"],
                                    "minus_best_classical": f["model_minus_baselines"][f["best_classical"]]["psnr"],
                                    "ahead_share": f["model_ahead_of_best_classical_share"]}
                             for arch, f in faces.items()},
              "real_classical": {m: next(iter(faces.values()))["overall"][m]["psnr"] for m in BASELINES},
              "best_classical": next(iter(faces.values()))["best_classical"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arch_table.json").write_text(json.dumps(result, indent=2))
    print("| arch | params | steps (images) in the CPU budget | synthetic PSNR small / medium / large / overall | "
          "real faces PSNR [95 %] | real minus best classical | ahead on faces | inference s |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, facts in rows.items():
        s = result["synthetic"]
        r = result["real_faces"][arch]
        print(f"| {arch} | {facts['parameters'] / 1e6:.2f} M | {facts['steps']} ({facts['images']}) | "
              f"{' / '.join(str(s[n][arch]['psnr']) for n in [*evaluation.bucket_names, 'overall'])} | "
              f"{r['psnr']} {r['interval_95']} | {r['minus_best_classical']['mean']:+.2f} "
              f"[{r['minus_best_classical']['low']:+.2f}, {r['minus_best_classical']['high']:+.2f}] | "
              f"{r['ahead_share']:.0%} | {facts['inference_seconds']} |")
    for method in BASELINES:
        print(f"| {method} | | | {' / '.join(str(result['synthetic'][n][method]['psnr']) for n in [*evaluation.bucket_names, 'overall'])} | "
              f"{result['real_classical'][method]} | | | |")


if __name__ == "__main__":
    main()
