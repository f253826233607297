"""Geometry core shared by template, faces, pafs and reconstruct."""
from headtex.geometry.camera import euler_degrees, project, project_pinhole, rotation_matrix, view_direction
from headtex.geometry.raster import interpolate, rasterize
from headtex.geometry.render import Light, lambert_shading, render_textured, sample_texture, vertex_normals
from headtex.geometry.visibility import depth_map, surface_points, visible_points

__all__ = [
    "Light", "depth_map", "euler_degrees", "interpolate", "lambert_shading", "project", "project_pinhole",
    "rasterize", "render_textured", "rotation_matrix", "sample_texture", "surface_points", "vertex_normals",
    "view_direction", "visible_points",
]
