"""The locked environment: does the lock hold what pyproject.toml asks for, and does the venv hold the lock?

    python tools/environment.py check LOCK [REPOSITORY]  # every requirement of pyproject.toml (dependencies, every
                                                         # extra, build-system) and requirements/lock.in is in LOCK
    python tools/environment.py sync LOCK                # uninstall what LOCK does not hold; the venv must equal it

`make install` runs both (check before installing the project, sync after), so a dependency added to
pyproject.toml without `make lock` fails there, one line per requirement, exit status 1. Run with the
venv's interpreter: it reads the installed distributions of the running Python.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")  # a lock line: name==version \ (hashes follow)


def locked_versions(lock: Path) -> dict[str, str]:
    """canonical name -> exact version, from a `uv pip compile --generate-hashes` file."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def project_requirements(pyproject: Path, lock_inputs: Path) -> list[tuple[str, Requirement]]:
    """(file, requirement) for everything `make lock` compiles: dependencies, every extra, build-system, lock.in."""
    project = tomllib.loads(pyproject.read_text())
    texts = list(project["project"].get("dependencies", []))
    for extra in project["project"].get("optional-dependencies", {}).values():
        texts += extra
    texts += project.get("build-system", {}).get("requires", [])
    requirements = [(pyproject.name, Requirement(text)) for text in texts]
    for line in lock_inputs.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirements.append((lock_inputs.name, Requirement(line)))
    return requirements


def unheld(requirements: list[tuple[str, Requirement]], pins: dict[str, str]) -> list[str]:
    """One sentence per requirement (for this Python) that the lock misses or pins outside its range."""
    problems = []
    for source, requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{source} asks for '{requirement}', which the lock does not hold")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{source} asks for '{requirement}', but the lock pins {requirement.name}=={version}")
    return problems


def installed_versions() -> dict[str, str]:
    """canonical name -> version of every distribution in this interpreter's environment."""
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def check(lock: Path, repository: Path = REPOSITORY) -> int:
    problems = unheld(project_requirements(repository / "pyproject.toml", repository / "requirements" / "lock.in"),
                      locked_versions(lock))
    for problem in problems:
        print(f"error: {problem} ({lock}): run `make lock` and commit it", file=sys.stderr)
    return 1 if problems else 0


def sync(lock: Path) -> int:
    pins = locked_versions(lock)
    extra = sorted(set(installed_versions()) - set(pins) - {"headtex"})
    if extra:  # left by an earlier lock or installed by hand: the venv holds the lock and nothing else
        print(f"removing what {lock.name} does not hold: {' '.join(extra)}")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *extra], check=True)
    installed = installed_versions()
    wrong = [f"{name}=={installed.get(name)} (lock: {version})" for name, version in pins.items()
             if installed.get(name) != version]
    if wrong:
        print(f"error: the venv differs from {lock.name}: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    command, arguments = sys.argv[1:2], sys.argv[2:]
    if command not in (["check"], ["sync"]) or not 1 <= len(arguments) <= (2 if command == ["check"] else 1):
        print(__doc__, file=sys.stderr)
        return 2
    lock = Path(arguments[0])
    if not lock.is_file():
        print(f"error: no lock file {lock}", file=sys.stderr)
        return 1
    if command == ["sync"]:
        return sync(lock)
    return check(lock, Path(arguments[1]) if len(arguments) > 1 else REPOSITORY)


if __name__ == "__main__":
    sys.exit(main())
