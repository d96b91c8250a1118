"""Progress of a long stage (extract, stats, verify), with totals.

On a terminal a bar (tqdm) shows what is done of the total; in a log (stderr
not a terminal, or a ``--log`` file) a plain line every ``interval_s`` seconds
says the same in words, e.g. ``kernels: rows 1,200,000 / 10,000,000 (12%)``,
so a long run can be watched in either. Library calls log lines only; the
command line turns bars on where stderr is a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("llmprof.progress")
#: Seconds between two plain progress lines in a log.
INTERVAL_S = 10.0
_bars = {"enabled": False}


def enable_bars(enabled: bool) -> None:
    """Draw bars on stderr from now on (the command line does, where stderr is a terminal and not --quiet)."""
    _bars["enabled"] = enabled


def counted(done: int, total: int | None, unit: str) -> str:
    """``rows 1,200,000 / 10,000,000 (12%)``; without a total, ``rows 1,200,000``."""
    if total is None:
        return f"{unit} {done:,}"
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return f"{unit} {done:,} / {total:,}{share}"


class Progress:
    """Counts what is done of ``total`` (None: unknown) under a label, as a bar or as periodic log lines.

    ``enabled=False`` counts silently, so a caller need not branch on whether progress is wanted.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "rows",
        *,
        enabled: bool = True,
        bar: bool | None = None,
        stream: TextIO | None = None,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self.enabled, self.interval_s, self.clock = enabled, interval_s, clock
        self.last = clock()
        drawn = enabled and (_bars["enabled"] if bar is None else bar)
        self.bar = tqdm(total=total, desc=label, unit=f" {unit}", file=stream or sys.stderr) if drawn else None

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled and self.clock() - self.last >= self.interval_s:
            self.last = self.clock()
            log.info("%s: %s", self.label, counted(self.done, self.total, self.unit))

    def close(self, finished: bool = True) -> None:
        """End the bar, or log the last line (only when the work finished: a failure says so itself)."""
        if self.bar is not None:
            self.bar.close()
        elif finished and self.enabled:
            log.info("%s: %s done", self.label, counted(self.done, self.total, self.unit))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.close(finished=kind is None)
