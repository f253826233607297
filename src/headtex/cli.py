"""The `headtex` command: one sub-command per pipeline stage, plus benchmarks."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from headtex.io import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Complete UV head textures from photographs.")
bench = typer.Typer(no_args_is_help=True, help="Benchmarks (speed figures for docs/RESULTS.md).")
app.add_typer(bench, name="bench")

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


@app.command()
def template(
    params: ParamsOption = Path("params.yaml"),
    source: Annotated[Optional[Path], typer.Option(help="already downloaded menpo3d-0.8.6.tar.gz (offline machines)")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("models/template"),
    metrics: Annotated[Path, typer.Option(help="metrics file")] = Path("metrics/template.json"),
) -> None:
    """Build the head template (mesh, UV layout, albedo, texel maps, shape basis) from the menpo3d scan."""
    from headtex.template.cli import run

    result = run(params, source, out, metrics)
    typer.echo(f"template: {result['vertices']} vertices, {result['triangles']} triangles, "
               f"UV coverage {result['uv_coverage']:.1%} -> {out}")


@bench.command("render")
def bench_render(
    template_dir: Annotated[Path, typer.Option("--template")] = Path("models/template"),
    image_size: int = 256,
    repeats: int = 20,
) -> None:
    """Median time to render one textured, lit view of the template."""
    from headtex.bench import render_benchmark

    typer.echo(render_benchmark(template_dir, image_size, repeats))


def main() -> None:
    try:
        app()
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
