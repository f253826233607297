"""The head template every stage shares: its data class, its files, and how to light and render it.

Written by the `template` stage (models/template/); read by faces, pafs, reconstruct and the tests.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headtex.geometry.camera import project, rotation_matrix
from headtex.geometry.raster import interpolate
from headtex.geometry.render import Light, lambert_shading, render_textured, vertex_normals
from headtex.geometry.uv import UVLayout
from headtex.io import UserError, load_npz, read_png, save_npz, write_json, write_png


@dataclass
class Template:
    """Everything later stages need of the head: mesh, layout, albedo, texel maps, shape basis."""

    vertices: np.ndarray  # V,3 float32, mm, normalised head frame
    faces: np.ndarray  # F,3 int32
    vertex_uv: np.ndarray  # V,2 float32, v down
    landmark_ids: np.ndarray  # 68 vertex ids in ibug order
    basis: np.ndarray  # K,V,3 float32, mm per unit coefficient
    basis_names: list[str]
    albedo: np.ndarray  # S,S,3 uint8 at uv.size (invalid texels filled)
    texel_triangle: np.ndarray  # S,S int32, -1 = not on the head
    texel_barycentrics: np.ndarray  # S,S,3 float32
    albedo_render: np.ndarray  # R,R,3 uint8 at the render resolution
    render_texel_triangle: np.ndarray
    render_texel_barycentrics: np.ndarray
    layout: UVLayout

    @property
    def texel_valid(self) -> np.ndarray:
        return self.texel_triangle >= 0

    def shaped(self, coefficients: np.ndarray) -> np.ndarray:
        """Vertices deformed by shape coefficients (K,)."""
        return self.vertices + np.tensordot(np.asarray(coefficients, dtype=np.float32), self.basis, axes=1)


def fill_invalid(texture: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Extend valid colours into invalid texels so bilinear lookups at the border never blend in black."""
    missing = (~valid).astype(np.uint8) * 255
    return cv2.inpaint(texture, missing, 3, cv2.INPAINT_TELEA)


def texel_normals(vertices: np.ndarray, faces: np.ndarray, triangle_id: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    """Unit surface normal per texel (H, W, 3); zeros on invalid texels."""
    normals = interpolate(vertex_normals(vertices, faces), faces, triangle_id, barycentrics)
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def default_camera(image_size: int) -> tuple[float, np.ndarray]:
    """Weak-perspective scale (px/mm) and translation that frame the whole head in a square image."""
    return image_size / 300.0, np.array([(image_size - 1) / 2.0, image_size * 0.45])


def lit_texture(
    albedo: np.ndarray, vertices: np.ndarray, faces: np.ndarray, texel_triangle: np.ndarray,
    texel_barycentrics: np.ndarray, light: Light,
) -> np.ndarray:
    """Albedo × view-independent Lambertian shading, in the UV layout (uint8)."""
    normals = texel_normals(vertices, faces, np.maximum(texel_triangle, 0), texel_barycentrics)
    shading = lambert_shading(normals.reshape(-1, 3), light).reshape(normals.shape)
    # Invalid texels keep their (filled) albedo under ambient + half diffuse, so bilinear edges stay sensible.
    flat_shading = np.asarray(light.ambient) + 0.5 * np.asarray(light.diffuse)
    shading[texel_triangle < 0] = flat_shading
    return np.clip(albedo * shading + 0.5, 0, 255).astype(np.uint8)


def render_view(
    template: Template, vertices: np.ndarray, texture: np.ndarray, yaw_degrees: float, image_size: int,
    pitch_degrees: float = 0.0, roll_degrees: float = 0.0, background=(128, 128, 128), supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a (shaped) head with a UV texture at a pose, framed by default_camera.

    Returns the uint8 image and the projected screen coordinates of every vertex.
    """
    scale, translation = default_camera(image_size)
    rotation = rotation_matrix(yaw_degrees, pitch_degrees, roll_degrees)
    screen = project(vertices, rotation, scale, translation)
    image, _ = render_textured(screen, template.faces, template.vertex_uv, texture, image_size, background, supersample)
    return image, screen


def save_template(folder: Path, template: Template) -> None:
    """Write the arrays (npz), a JSON description, the albedo PNGs and a viewable OBJ."""
    folder = Path(folder)
    save_npz(
        folder / "template.npz",
        vertices=template.vertices, faces=template.faces, vertex_uv=template.vertex_uv,
        landmark_ids=template.landmark_ids, basis=template.basis,
        texel_triangle=template.texel_triangle, texel_barycentrics=template.texel_barycentrics,
        render_texel_triangle=template.render_texel_triangle,
        render_texel_barycentrics=template.render_texel_barycentrics,
    )
    write_json(folder / "template.json", {
        "basis_names": template.basis_names,
        "layout": dataclasses.asdict(template.layout),
        "uv_size": int(template.albedo.shape[0]),
        "render_uv_size": int(template.albedo_render.shape[0]),
        "units": "millimetres; head frame x = subject's left, y = up, z = out of the face",
        "source": "menpo3d 0.8.6 james scan (BSD-3)",
    })
    write_png(folder / "albedo.png", template.albedo)
    write_png(folder / "albedo_render.png", template.albedo_render)
    write_png(folder / "valid.png", template.texel_valid.astype(np.uint8) * 255)
    write_obj(folder / "head.obj", template.vertices, template.faces, template.vertex_uv, "albedo_render.png")


def load_template(folder: Path) -> Template:
    folder = Path(folder)
    if not (folder / "template.npz").is_file():
        raise UserError(f"{folder}: no template found; run `headtex template` (or `dvc repro template`) first")
    arrays = load_npz(folder / "template.npz")
    meta = json.loads((folder / "template.json").read_text())
    return Template(
        **arrays,
        basis_names=meta["basis_names"],
        albedo=read_png(folder / "albedo.png"),
        albedo_render=read_png(folder / "albedo_render.png"),
        layout=UVLayout(**meta["layout"]),
    )


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, vertex_uv: np.ndarray, texture_name: str) -> None:
    """A Wavefront OBJ + MTL with one texture coordinate per vertex, referencing the texture by relative path."""
    path = Path(path)
    material = path.with_suffix(".mtl")
    material.write_text(f"newmtl head\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {texture_name}\n")
    out = io.StringIO()
    out.write(f"mtllib {material.name}\nusemtl head\n")
    np.savetxt(out, vertices, fmt="v %.4f %.4f %.4f")
    np.savetxt(out, np.column_stack([vertex_uv[:, 0], 1.0 - vertex_uv[:, 1]]), fmt="vt %.6f %.6f")
    corners = faces + 1
    np.savetxt(out, np.repeat(corners, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    path.write_text(out.getvalue())
