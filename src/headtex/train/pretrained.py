"""`headtex pretrained`: a trained model file -> the shipped checkpoint models/pretrained/<name>.pt (fp16, at
most 16 MB) and <name>.json, its provenance: the exact `dvc exp run -S ...` line, the git commit, the training
data's hashes from dvc.lock, the training summary and the evaluate figures. `train.init_from` loads the .pt."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import yaml

from headtex.inpaint.model import load_critic, load_inpainter, save_inpainter
from headtex.io import UserError, write_json

MAX_BYTES = 16 * 1024 * 1024  # the checkpoint is committed to git: 16 MB at most
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def git_commit(repo: Path) -> dict:
    """HEAD's commit and whether the work tree had changes (None where repo is no git checkout)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def data_hashes(lock_path: Path, stage: str = "train") -> dict[str, str]:
    """{path: md5} of the stage's non-code deps in dvc.lock (the data it was trained on)."""
    if not lock_path.is_file():
        raise UserError(f"{lock_path}: missing; the provenance names the training data by its dvc.lock hashes")
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    if stage not in stages:
        raise UserError(f"{lock_path}: no `{stage}` stage recorded; run `dvc repro {stage}` first")
    return {dep["path"]: dep.get("md5") for dep in stages[stage].get("deps", []) if not dep["path"].startswith("src/")}


def eval_figures(eval_path: Path) -> dict:
    """PSNR/SSIM/L1 per bucket and method (with the 95 % intervals) from metrics/eval.json."""
    if not eval_path.is_file():
        raise UserError(f"{eval_path}: missing; run `dvc repro evaluate` on the model first")
    metrics = json.loads(eval_path.read_text())
    return {"ship_output": metrics.get("ship_output"), "samples": metrics.get("samples"),
            "by_bucket": metrics.get("by_bucket"), "by_kind": metrics.get("by_kind")}


def export_pretrained(model_path: Path, name: str, folder: Path, command: str, repo: Path, lock_path: Path,
                      eval_path: Path, train_summary_path: Path) -> tuple[Path, Path]:
    """Write folder/<name>.pt (fp16 generator + critic) and folder/<name>.json; returns both paths."""
    if not NAME.fullmatch(name):
        raise UserError(f"{name!r}: a checkpoint name is letters, digits, '.', '_' and '-'")
    if not command.startswith("dvc exp run"):
        raise UserError(f"--command {command!r}: give the exact `dvc exp run -S ...` line that trained the model")
    generator, info = load_inpainter(model_path)
    critic = load_critic(model_path, info["latent"])
    provenance = {"name": name, "model": info, "command": command, "git": git_commit(repo),
                  "data": data_hashes(lock_path), "eval": eval_figures(eval_path),
                  "train": json.loads(train_summary_path.read_text()) if train_summary_path.is_file() else None}
    target = Path(folder) / f"{name}.pt"
    save_inpainter(target, generator, info["latent"], info["ship_output"], info["uv_size"], critic=critic, half=True)
    size = target.stat().st_size
    if size > MAX_BYTES:
        target.unlink()
        raise UserError(f"{model_path}: the fp16 checkpoint is {size / 2**20:.1f} MB, over the 16 MB a shipped "
                        "checkpoint may take; train a smaller model.latent")
    provenance["file"] = {"bytes": size, "sha256": hashlib.sha256(target.read_bytes()).hexdigest(), "dtype": "float16"}
    json_path = target.with_suffix(".json")
    write_json(json_path, provenance)
    return target, json_path
