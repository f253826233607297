"""Process pool for per-item work, in input order, with a progress bar."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_map(
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None, description: str = "",
    chunksize: int = 1,
) -> Iterator[Result]:
    """Yield function(item) for every item, in order; workers <= 1 runs in this process.

    `function` must be a module-level function (it is pickled to the workers);
    results come back in input order, so outputs never depend on the worker count.
    """
    items = list(items)
    workers = default_workers() if workers is None or workers <= 0 else workers
    progress = dict(total=len(items), desc=description, unit="item", disable=None, leave=False)
    if workers <= 1 or len(items) <= 1:
        yield from tqdm(map(function, items), **progress)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as executor:
        yield from tqdm(executor.map(function, items, chunksize=chunksize), **progress)
