"""Head pose and cameras.

Head frame: x to the subject's left (image right in a frontal view), y up,
z out of the face (frontal = +z), millimetres. Rotation = Rz(roll) Rx(pitch) Ry(yaw)
with right-handed matrices: yaw > 0 turns the nose towards the image's right,
pitch > 0 tilts the nose down, roll > 0 turns the head anticlockwise on screen.
"""
from __future__ import annotations

import numpy as np


def rotation_matrix(yaw_degrees: float, pitch_degrees: float = 0.0, roll_degrees: float = 0.0) -> np.ndarray:
    yaw, pitch, roll = np.radians([yaw_degrees, pitch_degrees, roll_degrees])
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rot_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rot_z @ rot_x @ rot_y


def euler_degrees(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of rotation_matrix: (yaw, pitch, roll) in degrees."""
    pitch = np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0))
    yaw = np.arctan2(-rotation[2, 0], rotation[2, 2])
    roll = np.arctan2(-rotation[0, 1], rotation[1, 1])
    return tuple(float(a) for a in np.degrees([yaw, pitch, roll]))


def project(vertices: np.ndarray, rotation: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    """Weak-perspective projection to screen (x right, y down, depth towards viewer), (N, 3)."""
    camera = vertices @ rotation.T
    screen = np.empty_like(camera)
    screen[:, 0] = scale * camera[:, 0] + translation[0]
    screen[:, 1] = -scale * camera[:, 1] + translation[1]
    screen[:, 2] = scale * camera[:, 2]
    return screen


def project_pinhole(
    vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray, focal: float, center: tuple[float, float]
) -> np.ndarray:
    """Pinhole projection; the camera sits on the +z axis looking down -z, translation moves the head."""
    camera = vertices @ rotation.T + translation
    distance = -camera[:, 2]
    if np.any(distance <= 0):
        raise ValueError("pinhole projection: part of the mesh is behind the camera")
    screen = np.empty_like(camera)
    screen[:, 0] = focal * camera[:, 0] / distance + center[0]
    screen[:, 1] = -focal * camera[:, 1] / distance + center[1]
    screen[:, 2] = camera[:, 2]
    return screen


def view_direction(rotation: np.ndarray) -> np.ndarray:
    """Unit vector from the head towards an orthographic camera, in the head frame."""
    return rotation.T @ np.array([0.0, 0.0, 1.0])
