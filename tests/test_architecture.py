"""The architecture's rules, checked: a stage imports libraries, never another stage; dvc.yaml's code deps
are exactly each stage's import closure; every params key a stage reads is declared for it in dvc.yaml."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "headtex"
STAGES = ("template", "faces", "pafs", "masks", "blend", "train", "evaluate", "reconstruct", "summary")
COMMANDS = ("complete",)  # command folders that are no pipeline stage (no dvc.yaml entry): the same rule holds


def module_file(name: str) -> Path | None:
    """The source file of a headtex module (a package's __init__.py), or None outside headtex."""
    if name != "headtex" and not name.startswith("headtex."):
        return None
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """headtex modules a file imports (any depth of the file unless top_level_only), with their parent packages."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    modules = set()
    for name in names:
        parts = name.split(".")
        modules |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    return {m for m in modules if module_file(m) is not None}


def import_closure(stage: str) -> set[Path]:
    """Every headtex source file that runs when `headtex <stage>` runs: the command module (its top level
    only: each sub-command imports its stage lazily) plus everything the stage's cli module reaches."""
    command = PACKAGE / "cli.py"
    todo = imported_modules(command, top_level_only=True) | {f"headtex.{stage}.cli", "headtex"}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= imported_modules(module_file(name)) - seen
    return {module_file(name) for name in seen} | {command}


def declared_code_deps(stage: str) -> set[Path]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stages[stage]["deps"]]
    return {REPO / d for d in deps if d.startswith("src/")}


def uncovered(closure: set[Path], deps: set[Path]) -> list[str]:
    """Closure files that no dep (the file itself, or a folder above it) covers."""
    return sorted(str(f.relative_to(REPO)) for f in closure if not any(d == f or d in f.parents for d in deps))


def unreachable(closure: set[Path], deps: set[Path]) -> list[str]:
    """Deps the stage cannot reach: a file outside the closure, or a folder none of whose files it runs."""
    return sorted(str(d.relative_to(REPO)) for d in deps
                  if not any(d == f or (d.is_dir() and d in f.parents) for f in closure))


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_code_deps_are_the_stages_import_closure(stage):
    """A change to any file a stage runs reruns it (`dvc repro` never reports stale results as unchanged),
    and no listed file is one it never runs."""
    closure, deps = import_closure(stage), declared_code_deps(stage)
    assert uncovered(closure, deps) == [], f"dvc.yaml [{stage}] deps miss files the stage imports"
    assert unreachable(closure, deps) == [], f"dvc.yaml [{stage}] deps list code the stage cannot reach"


def test_the_closure_check_fails_when_a_dep_is_removed():
    """The check bites: dropping a library the stage uses from its deps is reported."""
    closure, deps = import_closure("evaluate"), declared_code_deps("evaluate")
    assert uncovered(closure, deps - {REPO / "src/headtex/datasets.py"}) == ["src/headtex/datasets.py"]
    assert unreachable(closure, deps | {REPO / "src/headtex/generator.py"}) == ["src/headtex/generator.py"]


@pytest.mark.parametrize("stage", STAGES + COMMANDS)
def test_no_stage_imports_another_stage(stage):
    """One rule: a stage imports libraries, never another stage (no module under a stage folder does)."""
    others = {f"headtex.{s}" for s in STAGES + COMMANDS if s != stage}
    for path in (PACKAGE / stage).rglob("*.py"):
        reached = {m for m in imported_modules(path) if any(m == o or m.startswith(o + ".") for o in others)}
        assert not reached, f"{path.relative_to(REPO)} imports {sorted(reached)}"
