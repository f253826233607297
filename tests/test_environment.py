"""The locked environment (tools/environment.py, run by `make install`): the lock holds what pyproject.toml asks
for, a dependency added without `make lock` fails with one line, and the venv the tests run in is the lock."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "environment.py"
LOCK = REPO / "requirements" / f"lock-py{sys.version_info[0]}.{sys.version_info[1]}.txt"

pytestmark = pytest.mark.skipif(not LOCK.is_file(), reason=f"no lock for this Python ({LOCK.name})")


def check(lock: Path, repository: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "check", str(lock), str(repository)], capture_output=True,
                          text=True)


def tool_module():
    """tools/environment.py as a module (tools/ is no package): its lock reader and installed-versions reader."""
    spec = importlib.util.spec_from_file_location("environment_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked() -> dict[str, str]:
    return tool_module().locked_versions(LOCK)


def copy_of_project(root: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "requirements", root / "requirements")
    return root


def test_the_committed_lock_holds_every_requirement():
    result = check(LOCK, REPO)
    assert result.returncode == 0, result.stderr


def test_a_dependency_added_without_relocking_fails_with_one_line(tmp_path):
    project = copy_of_project(tmp_path)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("dependencies = [", 'dependencies = [\n    "einops>=0.8",', 1))
    result = check(project / "requirements" / LOCK.name, project)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: pyproject.toml asks for 'einops>=0.8', which the lock does not hold ({project / 'requirements' / LOCK.name}):"
        " run `make lock` and commit it"]


def test_a_range_the_locked_version_misses_fails(tmp_path):
    project = copy_of_project(tmp_path)
    numpy = locked()["numpy"]
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('"numpy>=1.26"', f'"numpy>{numpy}"'))
    result = check(project / "requirements" / LOCK.name, project)
    assert result.returncode == 1
    assert f"but the lock pins numpy=={numpy}" in result.stderr


def test_the_environment_the_tests_run_in_is_the_lock():
    """`make install` installs exactly the lock: every locked version is the installed one, nothing else is there."""
    installed = tool_module().installed_versions()
    installed.pop("headtex", None)
    assert installed == locked()


def test_every_stage_depends_on_the_lock():
    """An upgraded package (`make lock UPGRADE=...`) changes the lock file, so `dvc repro` reruns every stage:
    DVC cannot see which outputs a package touches, and any of them may."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert [name for name, stage in stages.items() if "requirements/lock-py3.11.txt" not in stage["deps"]] == []
