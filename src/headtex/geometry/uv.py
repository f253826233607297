"""The UV layout every stage shares (the `uv:` section of params.yaml)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from headtex.params import param


@dataclass(frozen=True)
class UVLayout:
    """Cylindrical UV layout about a vertical axis behind the face.

    u = 0.5 + angle / (2 * max_angle): the front of the face in the middle third,
    the sides of the head (ears included) in the left and right thirds; v runs
    from `top_mm` (hair) to `bottom_mm` (front of the neck), pointing down.
    The axis bends back below the chin (to `neck_axis_depth_mm` under
    `neck_top_mm`) because the neck's centre lies far behind the face's.
    """

    axis_depth_mm: float = param("cylinder axis depth behind the face (head frame, mm)")
    neck_axis_depth_mm: float = param("axis depth below neck_top_mm (the neck's centre)")
    neck_top_mm: float = param("height where the axis has finished bending back to the neck")
    chin_mm: float = param("height where the axis starts bending back")
    max_angle_degrees: float = param("u = 0 and u = 1 sit at -/+ this angle around the head", gt=0, le=180)
    top_mm: float = param("height of v = 0 (the crown)")
    bottom_mm: float = param("height of v = 1 (the front of the neck)")

    def axis_depth(self, height: np.ndarray) -> np.ndarray:
        t = np.clip((self.chin_mm - height) / (self.chin_mm - self.neck_top_mm), 0.0, 1.0)
        t = t * t * (3 - 2 * t)  # smoothstep: no kink in the layout
        return self.axis_depth_mm + t * (self.neck_axis_depth_mm - self.axis_depth_mm)

    def uv(self, vertices: np.ndarray) -> np.ndarray:
        depth = vertices[:, 2] - self.axis_depth(vertices[:, 1])
        angle = np.degrees(np.arctan2(vertices[:, 0], depth))
        u = 0.5 + angle / (2 * self.max_angle_degrees)
        v = (self.top_mm - vertices[:, 1]) / (self.top_mm - self.bottom_mm)
        return np.stack([u, v], axis=1)

    def radius(self, vertices: np.ndarray) -> np.ndarray:
        return np.hypot(vertices[:, 0], vertices[:, 2] - self.axis_depth(vertices[:, 1]))


@dataclass(frozen=True)
class UVParams(UVLayout):
    """The shared `uv:` section: the texture size plus the layout's geometry."""

    size: int = param("texture side in texels (the thesis' 192)", ge=8)

    def __post_init__(self) -> None:
        if self.size % 4:
            raise ValueError(f"size must be divisible by 4 (the generator halves it twice), got {self.size}")

    def layout(self) -> UVLayout:
        return UVLayout(**{f.name: getattr(self, f.name) for f in dataclasses.fields(UVLayout)})
