"""Check that dvc.lock records the code and params of this tree: run it BEFORE `make repro`.

`make repro` rewrites dvc.lock, so after it nothing can tell whether the committed lock was stale.
Before it, `dvc status` compares every stage's recorded deps, params and command with the tree. On a
fresh clone the data deps and outputs are missing ("deleted", "not in cache"): those are expected.
Anything else (a modified or new file under src/, a changed param, a changed command) means the
committed dvc.lock was not produced by this code: one line per stale stage, exit status 1.

    .venv/bin/python .ci/check_lock.py [REPOSITORY]
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MISSING_DATA = "deleted"  # a dep that is simply not there yet (upstream output of a fresh clone)


def stale_stages(status: dict) -> dict[str, list[str]]:
    """stage -> what changed since dvc.lock was written, from `dvc status --json` (missing data ignored)."""
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        problems = []
        for change in changes:
            if isinstance(change, str):  # "changed command", ...
                problems.append(change)
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                    problems += [f"param {key} {value}" for key, value in state.items()]
                elif state != MISSING_DATA:
                    problems.append(f"{path} {state}")
        if problems:
            stale[stage] = problems
    return stale


def dvc_status(repository: Path) -> dict:
    dvc = Path(sys.executable).with_name("dvc")  # the one installed beside this interpreter (.venv/bin)
    result = subprocess.run([str(dvc) if dvc.exists() else "dvc", "status", "--json"], cwd=repository,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"check_lock: dvc status failed in {repository}:\n{result.stderr.strip()}")
    return json.loads(result.stdout or "{}")


def main() -> int:
    repository = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    stale = stale_stages(dvc_status(repository))
    for stage, problems in stale.items():
        print(f"dvc.lock is stale for stage '{stage}': {', '.join(problems)}", file=sys.stderr)
    if stale:
        print("run `make repro` and commit dvc.lock (and metrics/) with the code", file=sys.stderr)
        return 1
    print("dvc.lock matches the code and params of this tree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
