"""Where the data stages' per-item tasks run: a local process pool (default) or a Dask cluster.

Stages call `open_executor(workers)` and `executor.map(function, items, description)`; they never know the backend.
`HEADTEX_DASK_SCHEDULER=tcp://host:8786` (or Dask's own `scheduler-address` config, e.g. `DASK_SCHEDULER_ADDRESS`)
sends the tasks to that cluster. Where a stage runs is no param, so it never changes dvc.lock; results come back in
input order, so outputs never depend on the backend or the worker count (README "Scale out").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import itertools
import multiprocessing
import os
import re
import sysconfig
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

import headtex
from headtex.io import UserError
from headtex.progress import progress, report

Item = TypeVar("Item")
Result = TypeVar("Result")

SCHEDULER_ENV = "HEADTEX_DASK_SCHEDULER"  # tcp://host:8786: run the data stages' tasks on that Dask cluster
TIMEOUT_ENV = "HEADTEX_DASK_TIMEOUT"  # seconds to reach the scheduler and see a worker (default below)
DEFAULT_TIMEOUT = 10.0  # a typo'd address fails in seconds, not after Dask's own 30 s
# Workers are started by a fresh single-threaded server process, never forked from the stage: a fork copies the
# stage's memory, including the state of thread pools whose threads it does not copy. docs/ARCHITECTURE.md, "Pool".
START_METHOD = "forkserver"
IN_FLIGHT_PER_WORKER = 2  # tasks submitted ahead per worker: keeps each busy, bounds the results held here
WORKERS_RECOUNT_SECONDS = 5.0  # how often a cluster's workers are counted again while a stage runs


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tune_worker_process() -> None:
    """Settings for processes that each own a core; each is a measured win and a no-op where unsupported.

    - OpenCV and numpy's OpenBLAS run single-threaded: the pool already uses every core, and their
      own threads oversubscribe them (a (262144, 3) @ (3,) product: 16 ms -> 0.7 ms).
    - glibc keeps freed memory instead of returning it to the OS: rendering allocates tens of MB of
      numpy temporaries per view and re-faulting their pages cost more than the arithmetic
      (rasterise at 512x512: 28 ms -> 12 ms).
    """
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: allocations below 32 MB come from the heap
        libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD: keep up to 512 MB of free heap
    except (OSError, AttributeError):
        pass
    for library in (Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas*.so*"):
        try:
            blas = ctypes.CDLL(str(library))  # already loaded by numpy: the same handle
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            if hasattr(blas, name):
                getattr(blas, name)(1)
                break


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the headtex sources and the numeric libraries' versions, as this process first saw them.

    A Dask worker outlives stages and keeps the modules it imported: one started before a code change would
    compute with the old code. Every task carries the client's fingerprint and the worker refuses a mismatch.
    """
    digest = hashlib.sha256(f"{np.__version__} {cv2.__version__}".encode())
    root = Path(headtex.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of every file under folder: the key of a per-process cache of what it holds."""
    return tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(folder.rglob("*")) if p.is_file())


def cached_per_folder(load: Callable[..., Result]) -> Callable[..., Result]:
    """load(folder, *args), made once per process and per version of the folder's files.

    A cluster worker serves many stages and runs; a cache keyed by the path alone would keep an old template after
    `dvc repro` rebuilt it in place.
    """
    @functools.lru_cache(maxsize=2)
    def made(folder: str, stamp: tuple, *args: Any) -> Result:
        return load(folder, *args)

    @functools.wraps(load)
    def cached(folder: str, *args: Any) -> Result:
        return made(folder, folder_stamp(Path(folder)), *args)

    return cached


_TUNED = False  # this process ran tune_worker_process


def _tune_once() -> None:
    global _TUNED
    if not _TUNED:
        tune_worker_process()
        _TUNED = True


class StaleWorker(Exception):
    """A cluster worker whose code differs from the client's."""


def _run_chunk(function: Callable[[Item], Result], chunk: Sequence[Item],
               fingerprint: str | None = None) -> list[Result]:
    """A task, in a worker: function over a few items. Cluster workers are checked and tuned here, once each."""
    if fingerprint is not None and code_fingerprint() != fingerprint:
        raise StaleWorker("a Dask worker runs other headtex code or libraries than this checkout "
                          "(started before a change, or another environment); restart the workers")
    _tune_once()
    return [function(item) for item in chunk]


def _where(error: BaseException) -> str:
    """file:line where a worker's exception was raised (the innermost frame outside Python's and the installed
    libraries' code), for the one error line."""
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]
    remote = getattr(error.__cause__, "tb", None)  # concurrent.futures' _RemoteTraceback: the worker's text
    if isinstance(remote, str):
        frames = [(name, int(line)) for name, line in re.findall(r'File "([^"]+)", line (\d+)', remote)]
    libraries = (sysconfig.get_paths()["stdlib"], "site-packages", "dist-packages")
    ours = [(name, line) for name, line in frames if not any(part in name for part in libraries)] or frames
    if not ours:
        return ""
    name, line = ours[-1]
    return f" at {name.partition('src/headtex/')[2] or Path(name).name}:{line}"


class Executor:
    """Runs a stage's tasks; subclasses say where. Use as a context manager (the pool or connection closes)."""

    backend = "in-process"
    address: str | None = None

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(self, function: Callable[[Item], Result], items: Iterable[Item], description: str = "",
            chunksize: int = 1, total: int | None = None) -> Iterator[Result]:
        """Yield function(item) for every item, in input order; a task is `chunksize` items.

        `function` must be a module-level function (it is pickled to the workers). Items are drawn as tasks are
        submitted and at most IN_FLIGHT_PER_WORKER tasks per worker are out at a time, so a generator of items
        (with `total` given) keeps this process at O(those tasks and results) whatever the number of items.
        A task that raises or a worker that dies ends the stage with one line (TaskFailed); never a hang.
        """
        if total is None:
            items = list(items)
            total = len(items)
        chunksize = max(1, chunksize)
        source = iter(items)
        chunks = iter(lambda: list(itertools.islice(source, chunksize)), [])
        tasks = -(-total // chunksize)
        yield from progress(self._results(function, chunks, tasks, description), description, total=total)

    def _results(self, function: Callable, chunks: Iterator[list], tasks: int, description: str) -> Iterator:
        for chunk in chunks:  # here, in this process (one worker, or a single task)
            yield from _run_chunk(function, chunk)

    def facts(self) -> dict[str, Any]:
        """Where the stage ran, for metrics/timing/<stage>.json."""
        return {"backend": self.backend, "scheduler": self.address, "workers": self.workers}

    def describe(self) -> str:
        return f"{self.workers} local process{'es' if self.workers != 1 else ''}"

    def close(self, failed: bool = False) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        self.close(failed=kind is not None)


class TaskFailed(UserError):
    """A task raised in a worker, or a worker died: one line naming the stage's task, the error and where."""


class _Windowed(Executor):
    """Ordered results over a window of submitted tasks, for backends that return futures."""

    def _submit(self, function: Callable, chunk: list) -> Any:
        raise NotImplementedError

    def _wait(self, futures: Iterable[Any]) -> set:
        """Block until at least one future is done; return the done ones."""
        raise NotImplementedError

    def _failure(self, error: BaseException, index: int, total: int, description: str) -> UserError:
        if isinstance(error, UserError):
            return error  # a worker's own one-line error (a bad input file): as it would be in-process
        if isinstance(error, StaleWorker):
            return TaskFailed(f"{description or 'stage'}: {error}")
        name = type(error).__name__
        return TaskFailed(f"{description or 'stage'}: task {index + 1} of {total} failed on {self.describe()}: "
                          f"{name}: {str(error).splitlines()[0] if str(error) else ''}{_where(error)}")

    def _window(self) -> int:
        """How many tasks may be out at once."""
        return max(1, IN_FLIGHT_PER_WORKER * self.workers)

    def _results(self, function: Callable, chunks: Iterator[list], tasks: int, description: str) -> Iterator:
        pending: deque = deque()
        for index, chunk in enumerate(chunks):
            if len(pending) >= self._window():
                yield from self._take(pending, tasks, description)
            pending.append((index, self._submit(function, chunk)))
        while pending:
            yield from self._take(pending, tasks, description)

    def _take(self, pending: deque, total: int, description: str) -> list:
        """The oldest task's results, waiting for it; any task that failed meanwhile ends the stage at once."""
        while True:
            for index, future in pending:
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise self._failure(future.exception(), index, total, description) from None
            index, future = pending[0]
            if future.done():
                pending.popleft()
                try:
                    return future.result()
                except BaseException as error:  # a cancelled future (the cluster went away)
                    raise self._failure(error, index, total, description) from None
            self._wait([f for _, f in pending])


class LocalPool(_Windowed):
    """Worker processes on this machine, started by a fork server (START_METHOD), tuned once each."""

    backend = "local"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: ProcessPoolExecutor | None = None

    def _results(self, function: Callable, chunks: Iterator[list], tasks: int, description: str) -> Iterator:
        if self.workers <= 1 or tasks <= 1:  # no pool to start for one worker or one task
            return Executor._results(self, function, chunks, tasks, description)
        return super()._results(function, chunks, tasks, description)

    def _submit(self, function: Callable, chunk: list) -> Any:
        if self._pool is None:  # started at the first task: a stage that runs everything in-process starts none
            context = multiprocessing.get_context(START_METHOD)
            if START_METHOD == "forkserver":
                context.set_forkserver_preload([])  # not even __main__: the server imports nothing of the stage
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_tune_once)
        return self._pool.submit(_run_chunk, function, chunk)

    def _wait(self, futures: Iterable[Any]) -> set:
        return wait(list(futures), return_when=FIRST_COMPLETED).done

    def _failure(self, error: BaseException, index: int, total: int, description: str) -> UserError:
        if isinstance(error, BrokenProcessPool):
            return TaskFailed(f"{description or 'stage'}: a worker process died during task {index + 1} of {total} "
                              "(killed, out of memory, or it could not start: a script that runs a stage "
                              "needs `if __name__ == '__main__':`)")
        return super()._failure(error, index, total, description)

    def close(self, failed: bool = False) -> None:
        if self._pool is None:
            return
        if failed:
            # The stage is over: stop the other workers now instead of letting them finish every queued task.
            # (concurrent.futures has no public kill before Python 3.14's terminate_workers().)
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
        self._pool.shutdown(wait=True, cancel_futures=failed)
        self._pool = None


class DaskCluster(_Windowed):
    """A Dask scheduler's workers: every task goes to the cluster; a dead worker's tasks are rerun elsewhere."""

    backend = "dask"

    def __init__(self, address: str, timeout: float) -> None:
        from distributed import Client

        try:
            self._client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise UserError(f"{address}: cannot reach the Dask scheduler ({SCHEDULER_ENV}) within {timeout:g} s "
                            f"({type(error).__name__}); nothing written") from None
        try:
            self._client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            self._client.close()
            raise UserError(f"{address}: the Dask scheduler has no workers after {timeout:g} s; "
                            "start some (`dask worker ...`, README \"Scale out\")") from None
        # Threads over all workers: each runs one task at a time (start workers with --nthreads 1 per core).
        threads = self._client.nthreads()
        super().__init__(sum(threads.values()))
        self.processes = len(threads)
        self.address = self._client.scheduler.address
        self._token, self._submitted = uuid.uuid4().hex[:8], 0
        self._fingerprint = code_fingerprint()
        self._counted = time.monotonic()

    def _window(self) -> int:
        # Batch jobs start one by one: a stage that began on the first node's workers widens its window as the
        # others join (asked every few seconds; `workers` in the timing file is the most seen).
        if time.monotonic() - self._counted > WORKERS_RECOUNT_SECONDS:
            self._counted = time.monotonic()
            threads = self._client.nthreads()
            self.workers, self.processes = max(self.workers, sum(threads.values())), max(self.processes, len(threads))
        return super()._window()

    def _submit(self, function: Callable, chunk: list) -> Any:
        self._submitted += 1  # keys name the function on Dask's dashboard, unique per stage run
        name = getattr(function, "__name__", type(function).__name__)  # a functools.partial has none
        key = f"headtex-{name}-{self._token}-{self._submitted}"
        return self._client.submit(_run_chunk, function, chunk, self._fingerprint, key=key, pure=False)

    def _wait(self, futures: Iterable[Any]) -> set:
        from distributed import wait as dask_wait

        with self._client.as_current():  # distributed.wait asks for the current client (ours is not the default)
            return dask_wait(list(futures), return_when="FIRST_COMPLETED").done

    def describe(self) -> str:
        return f"Dask {self.address} ({self.workers} worker thread{'s' if self.workers != 1 else ''})"

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "worker_processes": self.processes}

    def close(self, failed: bool = False) -> None:
        self._client.close()


def scheduler_address() -> str | None:
    """The Dask scheduler the stages use: $HEADTEX_DASK_SCHEDULER, else Dask's `scheduler-address` config."""
    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if address:
        return address
    if not any(name.startswith("DASK_") for name in os.environ) and not _dask_config_files():
        return None  # nothing could name a scheduler: don't import dask for every local run
    import dask.config

    return dask.config.get("scheduler-address", None) or None


def _dask_config_files() -> bool:
    folders = [Path(os.environ.get("DASK_CONFIG", Path.home() / ".config" / "dask")), Path("/etc/dask")]
    return any(folder.is_dir() and any(folder.glob("*.y*ml")) for folder in folders)


def open_executor(workers: int | None = None, stage: str = "") -> Executor:
    """The executor a stage runs its tasks on: the Dask cluster named outside params, else `workers` local
    processes (None or <= 0: every core). Says where on the log; a scheduler that cannot be reached is one
    line (UserError) before the stage writes anything."""
    address = scheduler_address()
    if address:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
        executor: Executor = DaskCluster(address, timeout)
    else:
        executor = _local_pool(workers)
    if stage:
        report(f"{stage}: tasks run on {executor.describe()}")
    return executor


def parallel_map(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None, description: str = "",
    chunksize: int = 1,
) -> Iterator[Result]:
    """Yield function(item) for every item, in order, on local processes (workers <= 1: in this process).

    For work that stays on this machine (evaluate's classical fills); the data stages use open_executor.
    """
    with _local_pool(workers) as pool:
        yield from pool.map(function, items, description, chunksize)


def _local_pool(workers: int | None) -> LocalPool:
    """`workers` local processes (None or <= 0: every core), this process tuned too: it runs the tasks itself
    when there is one worker or one task."""
    tune_worker_process()
    return LocalPool(default_workers() if workers is None or workers <= 0 else workers)
