"""The executor with real processes: the local pool (forkserver workers) and a Dask cluster on 127.0.0.1.

The cluster is a `dask scheduler` and two `dask worker` processes started here (random free ports, one thread
each), ended by the fixture's finaliser whatever the tests do. The slow tests run the real stages through DVC's
CLI on test_dvc.py's tiny params and compare the bytes with a local run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headtex import pool
from headtex.io import UserError
from headtex.pool import (
    SCHEDULER_ENV, TIMEOUT_ENV, LocalPool, StaleWorker, TaskFailed, _run_chunk, code_fingerprint, open_executor,
)
from test_dvc import dvc, git, make_project, output_digests

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
FAILING_ITEM = 1  # the second task: it fails while the first still runs


def slow_square(item: int) -> int:
    time.sleep(0.4 if item % 3 == 0 else 0.02)  # later tasks finish first: results must still come in input order
    return item * item


def raise_at_item(item: tuple[int, float]) -> int:
    """(index, seconds): the other tasks sleep, and are still running when the failure arrives."""
    index, seconds = item
    if index == FAILING_ITEM:
        raise ValueError(f"item {index} is off by one")
    time.sleep(seconds)
    return index


def die_at_item(item: tuple[int, float]) -> int:
    index, seconds = item
    if index == FAILING_ITEM:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker killed (the OOM killer, a node lost)
    time.sleep(seconds)
    return index


def dlib_cnn_faces(seed: int) -> int:
    """dlib's CNN detector on a noise image: its thread pool is what a forked worker inherited and hung on."""
    import numpy as np

    from headtex.detection import detect_faces

    return len(detect_faces(np.random.default_rng(seed).integers(0, 255, (160, 160, 3), dtype=np.uint8), "cnn", 0))


def test_local_pool_returns_results_in_input_order_on_any_worker_count():
    items = list(range(10))
    with LocalPool(2) as pool:
        two = list(pool.map(slow_square, items, "squares"))
    with LocalPool(1) as pool:
        one = list(pool.map(slow_square, items, "squares", chunksize=3))
    assert two == one == [i * i for i in items]


def test_local_workers_do_not_inherit_the_stages_dlib_thread_pool():
    """Issue 27's hang: a worker forked after the stage ran dlib's CNN waits forever on the CNN's thread pool
    (0 % CPU). Workers from the fork server start clean. Run in a subprocess so that a regression fails here."""
    script = ("from test_pool import dlib_cnn_faces; from headtex.pool import LocalPool\n"
              "dlib_cnn_faces(0)  # the stage uses dlib's CNN before the pool starts\n"
              "with LocalPool(2) as pool: print(list(pool.map(dlib_cnn_faces, range(4))))\n")
    # Its own process group: a regression leaves hung workers, which must not outlive the test.
    process = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("the workers hung (60 s)") from None
    assert process.returncode == 0, stderr
    assert stdout.strip() == "[0, 0, 0, 0]"


@pytest.mark.parametrize("function, expected", [
    (raise_at_item, f"task {FAILING_ITEM + 1} of 12 failed on 2 local processes: ValueError: item 1 is off by one "
                    "at test_pool.py:"),
    (die_at_item, "probe: a worker process died during task"),
])
def test_local_task_that_raises_or_dies_ends_the_map_with_one_line_in_seconds(function, expected):
    tick = time.perf_counter()
    with pytest.raises(TaskFailed) as caught, LocalPool(2) as pool:
        list(pool.map(function, [(index, 20.0) for index in range(12)], "probe"))
    seconds = time.perf_counter() - tick
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert seconds < 10.0, f"{seconds:.1f} s: the running tasks were waited for instead of stopped"  # each: 20 s


def test_a_worker_user_error_keeps_its_own_line():
    with pytest.raises(UserError, match="^(photo|other).png: not an image$"), LocalPool(2) as pool:
        list(pool.map(raise_user_error, ["photo.png", "other.png"]))  # both fail: the first to finish is reported


def raise_user_error(name: str) -> None:
    raise UserError(f"{name}: not an image")


def test_a_worker_with_other_code_refuses_the_task():
    """A cluster worker started before a code change keeps the old modules: the client's fingerprint differs."""
    with pytest.raises(StaleWorker, match="restart the workers"):
        _run_chunk(slow_square, [1], "0123456789abcdef")
    assert _run_chunk(slow_square, [3], code_fingerprint()) == [9]


def test_a_workers_template_cache_follows_the_files(template_dir, tmp_path):
    """Cluster workers outlive stages: faces' and pafs' per-process template caches reload a rebuilt template."""
    from headtex.faces.cli import _assets as faces_assets
    from headtex.pafs.cli import _assets as pafs_assets

    copy = shutil.copytree(template_dir, tmp_path / "template")
    first = faces_assets(str(copy)), pafs_assets(str(copy), (4,), False)
    assert (faces_assets(str(copy)), pafs_assets(str(copy), (4,), False)) == first  # cached: the same objects
    rebuilt = copy / "template.json"
    os.utime(rebuilt, ns=(rebuilt.stat().st_atime_ns, rebuilt.stat().st_mtime_ns + 1))
    assert faces_assets(str(copy))[0] is not first[0][0] and pafs_assets(str(copy), (4,), False)[0] is not first[1][0]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A Dask scheduler and workers as separate processes, as a user starts them by hand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        # The workers import this module's task functions (pickled by name), as pytest does: from tests/.
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        scheduler_file = folder / "scheduler.json"
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(free_port()), "--no-dashboard",
                                  "--scheduler-file", str(scheduler_file)])
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen([str(BIN / "dask"), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.folder)
        self.processes.append(process)
        return process

    def add_worker(self) -> subprocess.Popen:
        """One worker process (no nanny: killing it kills the worker), one thread."""
        return self._start("worker", ["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                      "--host", "127.0.0.1", "--death-timeout", "30"])

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=60)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.add_worker()
        cluster.add_worker()
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv(SCHEDULER_ENV, cluster.address)
    return cluster


def test_dask_results_are_the_local_results_in_input_order(on_cluster):
    with open_executor(0) as executor:
        assert executor.facts() == {"backend": "dask", "scheduler": on_cluster.address, "workers": 2,
                                    "worker_processes": 2}
        assert list(executor.map(slow_square, range(10), "squares")) == [i * i for i in range(10)]


def test_dask_task_that_raises_ends_the_map_with_one_line_in_seconds(on_cluster):
    tick = time.perf_counter()
    with pytest.raises(TaskFailed) as caught, open_executor(0) as executor:
        list(executor.map(raise_at_item, [(index, 0.5) for index in range(12)], "probe"))
    message = str(caught.value)
    assert (f"task {FAILING_ITEM + 1} of 12 failed on Dask {on_cluster.address} (2 worker threads): ValueError: "
            "item 1 is off by one at test_pool.py:") in message and "\n" not in message
    assert time.perf_counter() - tick < 5.0


def test_a_dask_stage_widens_its_window_as_workers_join(on_cluster, monkeypatch):
    """Batch jobs start one by one: tasks out at once follow the workers present, not those at the stage's start."""
    monkeypatch.setattr(pool, "WORKERS_RECOUNT_SECONDS", 0.0)
    with open_executor(0) as executor:
        assert executor._window() == 2 * 2
        extra = on_cluster.add_worker()
        try:
            on_cluster.wait_for_workers(3)
            assert executor._window() == 2 * 3 and executor.facts()["workers"] == 3
        finally:
            extra.terminate()
            extra.wait(timeout=30)


def test_unreachable_scheduler_is_one_line_and_nothing_is_written(template_dir, tmp_path):
    """Through the real command: exit 1 in seconds, one `error:` line on stderr, no output folder, no metrics."""
    env = dict(os.environ, **{SCHEDULER_ENV: f"tcp://127.0.0.1:{free_port()}", TIMEOUT_ENV: "2"})
    out = tmp_path / "out"
    tick = time.perf_counter()
    result = subprocess.run([str(BIN / "headtex"), "faces", "--params", str(TESTS.parent / "params.yaml"),
                             "--template", str(template_dir), "--out", str(out / "faces"),
                             "--metrics", str(out / "faces.json"), "--timing", str(out / "timing.json")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: tcp://127.0.0.1:")
    assert "cannot reach the Dask scheduler" in result.stderr and "nothing written" in result.stderr
    assert time.perf_counter() - tick < 15.0
    assert not out.exists()


# --- the stages through DVC (slow) ---

CLUSTER_STAGES = ("faces", "pafs", "blend")


def stage_digests(root: Path) -> dict[str, str]:
    """md5 of every file the cluster stages write (outputs and git-tracked metrics)."""
    prefixes = ("data/faces/", "data/pafs/", "data/textures/", "metrics/faces.json", "metrics/pafs.json",
                "metrics/blend.json")
    return {name: digest for name, digest in output_digests(root).items() if name.startswith(prefixes)}


@pytest.fixture(scope="module")
def local_project(tmp_path_factory, sdist, generator_wheel) -> Path:
    """The tiny pipeline up to blend, reproduced on the local pool and committed."""
    base = tmp_path_factory.mktemp("dvc-dask")
    root = make_project(base / "repo", sdist, base / "storage", generator_wheel)
    dvc(root, "repro", "blend")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "reproduced locally")
    return root


@pytest.mark.slow  # ~1 min on 2 cores: the local run, then faces, pafs and blend again through the cluster
def test_dvc_repro_through_a_dask_cluster_writes_the_local_bytes_and_leaves_dvc_lock(local_project, cluster):
    local = stage_digests(local_project)
    env_path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run([str(BIN / "dvc"), "repro", "--force", "--single-item", *CLUSTER_STAGES],
                            cwd=local_project, capture_output=True, text=True,
                            env=dict(os.environ, PATH=env_path, **{SCHEDULER_ENV: cluster.address}))
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in CLUSTER_STAGES:
        assert f"{stage}: tasks run on Dask {cluster.address} (2 worker threads)" in result.stderr + result.stdout
        timing = json.loads((local_project / "metrics" / "timing" / f"{stage}.json").read_text())
        assert (timing["backend"], timing["scheduler"], timing["workers"]) == ("dask", cluster.address, 2)
    assert stage_digests(local_project) == local
    assert git(local_project, "status", "--porcelain") == ""  # dvc.lock and the metrics: unchanged
    assert json.loads(dvc(local_project, "status", "--json", "--with-deps", "blend").stdout) == {}


@pytest.mark.slow  # ~25 s: pafs through the cluster while a third worker is killed
def test_a_dask_worker_killed_mid_stage_changes_no_byte(local_project, cluster, tmp_path):
    """pafs with an extra worker that is killed once the stage's tasks run: Dask reruns its tasks elsewhere."""
    from distributed import Client

    local = stage_digests(local_project)
    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        before = set(client.nthreads())
        extra = cluster.add_worker()
        client.wait_for_workers(3, timeout=60)
        (address,) = set(client.nthreads()) - before
        out = tmp_path / "pafs"
        command = [str(BIN / "headtex"), "pafs", "--faces", "data/faces", "--out", str(out), "--metrics",
                   str(tmp_path / "pafs.json"), "--timing", str(tmp_path / "timing.json")]
        stage = subprocess.Popen(command, cwd=local_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=dict(os.environ, **{SCHEDULER_ENV: cluster.address}))
        # Killed while it computes one of the stage's tasks: that task must be rerun on another worker.
        deadline = time.monotonic() + 120
        while not client.processing([address]).get(address) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.processing([address]).get(address), "the extra worker never got a task"
        extra.send_signal(signal.SIGKILL)
    stdout, stderr = stage.communicate(timeout=300)
    assert stage.returncode == 0, stderr
    assert extra.wait(timeout=10) == -signal.SIGKILL
    written = {f"data/pafs/{p.relative_to(out)}" for p in out.rglob("*") if p.is_file()}
    assert written == {name for name in local if name.startswith("data/pafs/")}
    for name in written:
        assert hashlib.md5((out / name.removeprefix("data/pafs/")).read_bytes()).hexdigest() == local[name], name
    assert (tmp_path / "pafs.json").read_bytes() == (local_project / "metrics" / "pafs.json").read_bytes()


def test_cluster_run_gives_its_command_the_scheduler_and_its_exit_status():
    """`python -m headtex.cluster run --local 1 -- command`: the command sees HEADTEX_DASK_SCHEDULER, a worker is
    up, and its exit status is the launcher's."""
    script = ("import os, sys; from headtex.pool import open_executor\n"
              "with open_executor() as executor: print(executor.facts()['scheduler'] == os.environ['"
              + SCHEDULER_ENV + "'], executor.workers)\nsys.exit(3)\n")
    result = subprocess.run([sys.executable, "-m", "headtex.cluster", "run", "--local", "1", "--", sys.executable,
                             "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "True 1"


def test_the_readmes_slurm_recipe_starts_one_single_threaded_worker_per_core():
    """The jobqueue config in README "Scale out", as dask-jobqueue turns it into a job script (nothing submitted)."""
    pytest.importorskip("dask_jobqueue")
    import dask.config
    import yaml
    from dask_jobqueue import SLURMCluster

    readme = (TESTS.parent / "README.md").read_text()
    block = readme.split("```yaml\n  jobqueue:", 1)[1].split("```", 1)[0]
    config = yaml.safe_load("jobqueue:" + "\n".join(line[2:] for line in block.splitlines()))
    keys = {f"jobqueue.slurm.{key}": value for key, value in config["jobqueue"]["slurm"].items()}
    with dask.config.set(keys), SLURMCluster(scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    assert "--nworkers 64" in script and "--nthreads 1" in script and "#SBATCH -n 1" in script
    assert "/shared/headtex/.venv/bin/python -m distributed.cli.dask_worker" in script
