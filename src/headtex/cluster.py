"""A Dask cluster for the data stages: start one, run a command on it, measure it (README "Scale out").

    python -m headtex.cluster run --jobs 8 -- dvc repro     # Slurm jobs via dask-jobqueue (`pip install -e .[slurm]`)
    python -m headtex.cluster run --local 2 -- dvc repro    # a scheduler and 2 worker processes on this machine
    python -m headtex.cluster bench --params p.yaml ...     # per-task overhead, bytes per image, images/s

The stages find the cluster through HEADTEX_DASK_SCHEDULER (headtex.pool), which `run` sets for its command; this
module starts clusters and is no stage's dependency, so nothing here can change dvc.lock.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import typer
import yaml

from headtex.io import UserError
from headtex.pool import SCHEDULER_ENV, Executor, LocalPool, open_executor

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n\n")[0])


def one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    """A command whose user errors print `error: ...` and exit 1, as `headtex` does (headtex.cli.main)."""
    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    return checked


@contextmanager
def start_cluster(jobs: int, local: int) -> Iterator[Any]:
    """A dask-jobqueue SLURMCluster of `jobs` jobs (its cores, memory, walltime, python: Dask's jobqueue.slurm
    config), or a LocalCluster of `local` single-threaded worker processes."""
    if (jobs > 0) == (local > 0):
        raise UserError("give --jobs N (Slurm jobs) or --local N (worker processes here), not both or neither")
    if jobs:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise UserError("--jobs needs dask-jobqueue: pip install -e '.[slurm]'") from None
        cluster = SLURMCluster()
        cluster.scale(jobs=jobs)
    else:
        from distributed import LocalCluster

        # Its workers' complaints when the cluster closes under them are not the user's business.
        cluster = LocalCluster(n_workers=local, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL)
    with cluster:
        yield cluster


@contextmanager
def scheduler_env(address: str | None) -> Iterator[None]:
    """HEADTEX_DASK_SCHEDULER set to address (None: unset) for the stages run in this process."""
    saved = os.environ.pop(SCHEDULER_ENV, None)
    if address:
        os.environ[SCHEDULER_ENV] = address
    try:
        yield
    finally:
        os.environ.pop(SCHEDULER_ENV, None)
        if saved is not None:
            os.environ[SCHEDULER_ENV] = saved


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@one_line_errors
def run(
    context: typer.Context,
    jobs: Annotated[int, typer.Option(help="Slurm jobs (dask-jobqueue, config jobqueue.slurm)")] = 0,
    local: Annotated[int, typer.Option(help="worker processes on this machine instead")] = 0,
    wait: Annotated[float, typer.Option(help="seconds to wait for the first worker (queued jobs)")] = 3600.0,
) -> None:
    """Start a cluster, run the command after `--` with HEADTEX_DASK_SCHEDULER set to it, stop the cluster."""
    from distributed import Client

    if not context.args:
        raise UserError("give the command to run after --, e.g. `-- dvc repro`")
    with start_cluster(jobs, local) as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=wait)
        typer.echo(f"cluster {cluster.scheduler_address}: {len(client.nthreads())} workers so far", err=True)
        code = subprocess.run(context.args, env={**os.environ, SCHEDULER_ENV: cluster.scheduler_address}).returncode
    raise typer.Exit(code)


def _noop(item: int) -> int:
    return item


def task_overhead(executor: Executor, tasks: int) -> float:
    """ms of wall time per empty task through executor, its workers warm (the first map starts them)."""
    list(executor.map(_noop, range(2 * executor.workers)))
    tick = time.perf_counter()
    list(executor.map(_noop, range(tasks)))
    return 1000 * (time.perf_counter() - tick) / tasks


def pickled_bytes(value: object) -> int:
    """Bytes of value as it crosses the network (pickle 5, as Dask sends numpy arrays)."""
    return len(pickle.dumps(value, protocol=5))


def bytes_per_image(params_path: Path, template_dir: Path, faces_dir: Path) -> dict[str, int]:
    """Task and result bytes per image of one faces and one pafs task (identity 0)."""
    from headtex.faces.cli import FacesParams, _synthetic_identity
    from headtex.pafs.cli import FACES_TRUTH_KEYS, PafsParams, _identity_items, _process_identity
    from headtex.datasets import FACES, iter_shards
    from headtex.params import load_params, section

    params = load_params(params_path)
    faces_task = (str(template_dir.resolve()), section(params, "faces", FacesParams), 0)
    faces_result = _synthetic_identity(faces_task)
    views = len(faces_result.rendered.images)
    item = _identity_items(next(iter_shards(faces_dir, FACES, FACES_TRUTH_KEYS))[1], True)[0]
    pafs_task = (str(template_dir.resolve()), section(params, "pafs", PafsParams), item)
    pafs_result = _process_identity(pafs_task)
    return {"faces_task": pickled_bytes(faces_task) // views, "faces_result": pickled_bytes(faces_result) // views,
            "pafs_task": pickled_bytes(pafs_task) // views, "pafs_result": pickled_bytes(pafs_result) // views}


@app.command()
@one_line_errors
def bench(
    params: Annotated[Path, typer.Option(help="params.yaml (its faces.identities)")] = Path("params.yaml"),
    template: Annotated[Path, typer.Option(help="template folder")] = Path("models/template"),
    workers: Annotated[str, typer.Option(help="worker counts to compare, comma-separated")] = "1,2",
    tasks: Annotated[int, typer.Option(help="empty tasks for the per-task overhead")] = 400,
    out: Annotated[Path | None, typer.Option(help="also write the figures here (JSON)")] = None,
) -> None:
    """The executor's figures: per-task overhead, bytes per image, faces and pafs images/s on the local pool and
    through a Dask scheduler (LocalCluster on this machine) per worker count; one line each."""
    from headtex.faces.cli import run as run_faces
    from headtex.pafs.cli import run as run_pafs

    counts = [int(n) for n in workers.split(",")]
    figures: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "load_average_before": [round(x, 2) for x in os.getloadavg()],
                               "identities": yaml.safe_load(params.read_text())["faces"]["identities"], "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for count in counts:
            for backend in ("local", "dask"):
                with start_cluster(0, count) if backend == "dask" else nullcontext() as cluster:
                    with scheduler_env(cluster.scheduler_address if cluster else None):
                        with open_executor(count) as executor:
                            overhead = task_overhead(executor, tasks)
                        tick = time.perf_counter()
                        faces = run_faces(params, template, folder / "faces", folder / "faces.json", count,
                                          folder / "faces-timing.json")
                        faces_seconds = time.perf_counter() - tick
                        tick = time.perf_counter()
                        pafs = run_pafs(params, folder / "faces", template, folder / "pafs", folder / "pafs.json",
                                        count, folder / "pafs-timing.json")
                        pafs_seconds = time.perf_counter() - tick
                row = {"backend": backend, "workers": count, "task_overhead_ms": round(overhead, 2),
                       "faces_images_per_second": round(faces["images"] / faces_seconds, 2),
                       "pafs_images_per_second": round(pafs["views_in"] / pafs_seconds, 2),
                       "faces_seconds": round(faces_seconds, 1), "pafs_seconds": round(pafs_seconds, 1)}
                figures["runs"].append(row)
                typer.echo(f"{backend} x{count}: {overhead:.2f} ms per empty task; "
                           f"faces {row['faces_images_per_second']} "
                           f"images/s ({faces_seconds:.1f} s), pafs {row['pafs_images_per_second']} images/s "
                           f"({pafs_seconds:.1f} s), whole stage runs")
        figures["bytes_per_image"] = bytes_per_image(params, template, folder / "faces")
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    typer.echo(f"bytes per image (pickled, as sent): {json.dumps(figures['bytes_per_image'])}; load average "
               f"{figures['load_average_before']} -> {figures['load_average_after']} on {figures['cores']} cores")
    if out is not None:
        out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    app()
