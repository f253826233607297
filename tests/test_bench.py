"""Speed benchmarks: timed by `make bench` (pytest --benchmark-only); `make test` runs each once, untimed, for its asserts."""

from headtex.geometry import Light
from headtex.geometry.template import lit_texture, render_view


def test_render_256(benchmark, template):
    lit = lit_texture(template.albedo_render, template.vertices, template.faces,
                      template.render_texel_triangle, template.render_texel_barycentrics, Light())
    image, _ = benchmark(render_view, template, template.vertices, lit, 20.0, 256)
    assert image.shape == (256, 256, 3)
