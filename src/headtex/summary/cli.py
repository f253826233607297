"""`headtex summary`: the stages' metrics files -> metrics/summary.json (the headline numbers)."""
from __future__ import annotations

import json
from pathlib import Path

from headtex.io import UserError, write_json
from headtex.summary.core import summarise

# stage -> its metrics file, as dvc.yaml names it
SOURCES = {"faces": "faces.json", "pafs": "pafs.json", "blend": "blend.json", "evaluate": "eval.json",
           "reconstruct": "reconstruct.json"}


def read_metrics(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found; run `dvc repro {stage}` first")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error.__class__.__name__}); rerun `dvc repro {stage}`") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; rerun `dvc repro {stage}`")
    return data


def run(metrics_dir: Path, out: Path) -> dict:
    metrics_dir = Path(metrics_dir)
    data = {stage: read_metrics(metrics_dir / name, stage) for stage, name in SOURCES.items()}
    try:
        summary = summarise(data["faces"], data["pafs"], data["blend"], data["evaluate"], data["reconstruct"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{metrics_dir / SOURCES['evaluate']}: missing or malformed scores ({error}); "
                        "rerun `dvc repro evaluate`") from None
    write_json(out, summary)
    return summary
