"""params.yaml: one section per stage, read into a dataclass that rejects unknown keys."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headtex.io import UserError

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


@dataclass
class UVParams:
    """The shared `uv:` section: texture size and the cylindrical layout (see UVLayout)."""

    size: int = 192
    axis_depth_mm: float = -50.0
    neck_axis_depth_mm: float = -110.0
    neck_top_mm: float = -100.0
    chin_mm: float = -50.0
    max_angle_degrees: float = 120.0
    top_mm: float = 180.0
    bottom_mm: float = -120.0

    def layout(self):
        from headtex.template.core import UVLayout

        return UVLayout(**{k: v for k, v in dataclasses.asdict(self).items() if k != "size"})
