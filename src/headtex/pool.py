"""Process pool for per-item work, in input order, with a progress bar."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from headtex.progress import progress

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tune_worker_process() -> None:
    """Settings for processes that each own a core; each is a measured win and a no-op where unsupported.

    - OpenCV and numpy's OpenBLAS run single-threaded: the pool already uses every core, and their
      own threads oversubscribe them (a (262144, 3) @ (3,) product: 16 ms -> 0.7 ms). OpenCV's thread
      pool must also not exist in a parent that forks, or the forked workers deadlock.
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


def parallel_map(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None, description: str = "",
    chunksize: int = 1,
) -> Iterator[Result]:
    """Yield function(item) for every item, in order; workers <= 1 runs in this process.

    `function` must be a module-level function (it is pickled to the workers);
    results come back in input order, so outputs never depend on the worker count.
    """
    items = list(items)
    tune_worker_process()  # in the parent too: it works alone when workers <= 1, and forks otherwise
    workers = default_workers() if workers is None or workers <= 0 else workers
    if workers <= 1 or len(items) <= 1:
        yield from progress(map(function, items), description, total=len(items))
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=tune_worker_process) as executor:
        yield from progress(executor.map(function, items, chunksize=chunksize), description, total=len(items))
