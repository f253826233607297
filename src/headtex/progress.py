"""Progress for long stages: a bar on a terminal, a line every ~10 % in a log (DVC, CI, nohup)."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
LOG_STEPS = 10  # lines per loop in a log


def progress(items: Iterable[Item], description: str, rank: int = 0, total: int | None = None) -> Iterator[Item]:
    """Yield items, showing progress on stderr; silent on every rank but 0 (torchrun)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if rank != 0 or not total:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc=description, total=total, unit="item", leave=False)
        return
    marks = {max(1, round(total * k / LOG_STEPS)) for k in range(1, LOG_STEPS + 1)}
    for done, item in enumerate(items, 1):
        yield item
        if done in marks:
            print(f"{description}: {done}/{total} ({done / total:.0%})", file=sys.stderr, flush=True)


def report(line: str, error: bool = False) -> None:
    """One line for the user (on stderr when it reports an error), without breaking a progress bar."""
    tqdm.write(line, file=sys.stderr if error else None)
