import numpy as np
import pytest

from headtex.geometry import (
    Light, depth_map, euler_degrees, interpolate, lambert_shading, project, project_pinhole, rasterize,
    render_textured, rotation_matrix, sample_texture, vertex_normals, view_direction, visible_points,
)
from headtex.geometry.rbf import wendland, wendland_field


def square(size: float, depth: float = 0.0):
    """Two triangles covering [0, size]^2 in screen space at a constant depth."""
    screen = np.array([[0, 0, depth], [size, 0, depth], [size, size, depth], [0, size, depth]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return screen, faces


def sphere(subdivisions: int = 3):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=50.0)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def test_square_covers_exactly_its_pixels_once():
    screen, faces = square(9.0)
    triangle_id, barycentrics = rasterize(screen, faces, 16, 16)
    covered = triangle_id >= 0
    assert covered[:10, :10].all() and covered.sum() == 100  # pixel centres 0..9 inclusive
    np.testing.assert_allclose(barycentrics[covered].sum(-1), 1.0, atol=1e-6)
    assert (barycentrics[covered] >= -1e-6).all()


def test_zbuffer_keeps_the_nearest_surface():
    near, faces = square(9.0, depth=5.0)
    far, _ = square(15.0, depth=-5.0)
    screen = np.vstack([far, near])
    triangle_id, _ = rasterize(screen, np.vstack([faces, faces + 4]), 16, 16)
    assert set(np.unique(triangle_id[:10, :10])) <= {2, 3}  # the near square's triangles
    assert set(np.unique(triangle_id[12:, 12:])) <= {0, 1}


def test_interpolation_is_per_pixel_not_per_triangle():
    screen, faces = square(15.0)
    values = screen[:, :1]  # x coordinate as an attribute
    triangle_id, barycentrics = rasterize(screen, faces, 16, 16)
    x = interpolate(values, faces, triangle_id, barycentrics)[..., 0]
    np.testing.assert_allclose(x, np.tile(np.arange(16.0), (16, 1)), atol=1e-4)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (35, -10, 5), (-60, 20, -15), (90 - 1e-3, 0, 0)])
def test_euler_round_trip(yaw, pitch, roll):
    rotation = rotation_matrix(yaw, pitch, roll)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(euler_degrees(rotation), (yaw, pitch, roll), atol=1e-6)


def test_positive_yaw_turns_the_nose_to_the_image_right():
    nose = np.array([[0.0, 0.0, 100.0]])
    screen = project(nose, rotation_matrix(30.0), 1.0, np.zeros(2))
    assert screen[0, 0] > 0
    # ...so the camera now sees the subject's right side (-x).
    np.testing.assert_allclose(view_direction(rotation_matrix(30.0)), [-np.sin(np.radians(30)), 0, np.cos(np.radians(30))])


def test_pinhole_matches_weak_perspective_far_away():
    vertices, _ = sphere(1)
    rotation = rotation_matrix(20.0)
    distance = 1e6
    pinhole = project_pinhole(vertices, rotation, np.array([0, 0, -distance]), focal=distance, center=(0.0, 0.0))
    weak = project(vertices, rotation, 1.0, np.zeros(2))
    np.testing.assert_allclose(pinhole[:, :2], weak[:, :2], atol=1e-2)
    with pytest.raises(ValueError, match="behind the camera"):
        project_pinhole(vertices, rotation, np.zeros(3), 1.0, (0.0, 0.0))


def test_texture_lookup_is_bilinear():
    texture = np.zeros((2, 2, 3), dtype=np.uint8)
    texture[:, 1] = 200
    # Halfway between the two texel centres in u.
    value = sample_texture(texture, np.array([[0.5, 0.25]]))
    np.testing.assert_allclose(value[0], [100, 100, 100], atol=1)


def test_render_reproduces_a_flat_texture():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    screen, faces = square(31.0)
    # Texel centres of a 32-texel texture line up with the 32 pixel centres.
    vertex_uv = (screen[:, :2] + 0.5) / 32.0
    image, covered = render_textured(screen, faces, vertex_uv, texture, 32, supersample=1)
    np.testing.assert_array_equal(image, texture)
    assert covered.min() == 1.0


def test_sphere_normals_point_outwards_and_light_shades_the_lit_side():
    vertices, faces = sphere()
    normals = vertex_normals(vertices, faces)
    np.testing.assert_allclose((normals * vertices).sum(1) / 50.0, 1.0, atol=0.02)
    shading = lambert_shading(normals, Light(ambient=(0.2,) * 3, diffuse=(0.8,) * 3, direction=(0, 0, 1)))
    front, back = vertices[:, 2].argmax(), vertices[:, 2].argmin()
    np.testing.assert_allclose(shading[front], 1.0, atol=0.02)
    np.testing.assert_allclose(shading[back], 0.2)


def test_visibility_hides_the_back_of_a_sphere_and_grazing_points():
    vertices, faces = sphere()
    normals = vertex_normals(vertices, faces)
    rotation = rotation_matrix(60.0)
    screen = project(vertices, rotation, 1.0, np.array([64.0, 64.0]))
    depth = depth_map(screen, faces, 128, 128)
    visible = visible_points(screen, normals, view_direction(rotation), depth, 1.0, 80.0)
    facing_cosine = normals @ view_direction(rotation)
    assert visible[facing_cosine > 0.3].all()
    assert not visible[facing_cosine < np.cos(np.radians(80.0))].any()


def test_visibility_hides_points_behind_an_occluder_that_face_the_camera():
    """A surface that faces the camera is hidden where something lies in front of it (the z-buffer, not the normals)."""
    floor, faces = square(15.0, depth=0.0)
    occluder, _ = square(6.0, depth=10.0)
    occluder[:, :2] += 4.0  # covers pixels 4..10 of the floor, 10 units nearer the camera
    screen = np.vstack([floor, occluder])
    depth = depth_map(screen, np.vstack([faces, faces + 4]), 16, 16)
    rows, cols = np.mgrid[0:16, 0:16]
    points = np.column_stack([cols.ravel(), rows.ravel(), np.zeros(256)]).astype(float)  # on the floor
    normals = np.tile([0.0, 0.0, 1.0], (256, 1))  # all face the camera
    visible = visible_points(points, normals, np.array([0.0, 0.0, 1.0]), depth, 1.0, 80.0).reshape(16, 16)
    behind = np.zeros((16, 16), bool)
    behind[4:11, 4:11] = True
    np.testing.assert_array_equal(visible, ~behind)


def test_wendland_field_passes_through_its_values_and_is_zero_beyond_its_radius():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-20, 20, (12, 3))
    values = rng.normal(0, 3, (12, 3))
    np.testing.assert_allclose(wendland_field(centres, centres, values, 15.0), values, atol=1e-6)
    points = rng.uniform(-60, 60, (400, 3))
    field = wendland_field(points, centres, values, 15.0)
    far = np.min(np.linalg.norm(points[:, None] - centres[None], axis=2), axis=1) >= 15.0
    assert far.sum() > 50 and np.all(field[far] == 0) and np.any(field[~far] != 0)
    assert wendland(np.array([0.0, 0.5, 1.0, 2.0])).tolist() == [1.0, 0.1875, 0.0, 0.0]
