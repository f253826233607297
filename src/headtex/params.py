"""params.yaml: one section per stage, read into a dataclass that rejects unknown keys."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headtex.io import UserError
from headtex.template.core import UVLayout

T = TypeVar("T")


def load_params(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of sections")
    return params


def section(params: dict[str, Any], name: str, cls: type[T], **shared: Any) -> T:
    """Build `cls` from params[name] plus explicitly shared keys, naming any unknown or missing key."""
    values = dict(params.get(name) or {})
    values.update(shared)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(f"params.yaml [{name}]: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise UserError(f"params.yaml [{name}]: {error}") from None


@dataclass(frozen=True)
class UVParams(UVLayout):
    """The shared `uv:` section: the texture size plus the cylindrical layout's geometry (UVLayout)."""

    size: int = 192

    def layout(self) -> UVLayout:
        return UVLayout(**{f.name: getattr(self, f.name) for f in dataclasses.fields(UVLayout)})
