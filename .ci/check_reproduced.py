"""After `make repro` on a fresh clone: the data stages reproduced the committed dvc.lock byte for byte.

Compares every output (its md5, size, file count) that the working tree's dvc.lock records for each stage of
REPRODUCED with what the committed one (HEAD) records; one line per stage that differs, exit status 1.
The other stages (train and after) are not compared: torch's CPU kernels round differently by processor
(README "Environment").

    .venv/bin/python .ci/check_reproduced.py [REPOSITORY]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPRODUCED = ("template", "stylegan", "faces", "pafs", "masks", "blend")  # measured: docs/RESULTS.md "Reproducibility"
# (stylegan and the generated faces run OpenVINO, whose CPU kernels may round by processor as torch's do: a fresh
# clone on the same machine reproduces them, another CPU is not measured)


def stage_outputs(lock: dict, stage: str) -> dict[str, tuple]:
    return {out["path"]: (out.get("md5"), out.get("size"), out.get("nfiles"))
            for out in lock["stages"].get(stage, {}).get("outs", [])}


def differing_stages(committed: dict, reproduced: dict, stages=REPRODUCED) -> dict[str, list[str]]:
    """stage -> the outputs whose recorded hash differs between the two dvc.lock contents."""
    differing = {}
    for stage in stages:
        before, after = stage_outputs(committed, stage), stage_outputs(reproduced, stage)
        paths = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
        if paths:
            differing[stage] = paths
    return differing


def main() -> int:
    repository = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    committed = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=repository, check=True,
                                              capture_output=True, text=True).stdout)
    reproduced = yaml.safe_load((repository / "dvc.lock").read_text())
    differing = differing_stages(committed, reproduced)
    for stage, paths in differing.items():
        print(f"stage '{stage}' did not reproduce the committed dvc.lock: {', '.join(paths)} differ", file=sys.stderr)
    if differing:
        return 1
    print(f"{', '.join(REPRODUCED)}: outputs byte for byte as the committed dvc.lock records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
