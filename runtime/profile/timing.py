"""The one timing function: the profiler, the latency table and the benchmarks all measure with it."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Timing", "measure"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int
    p99_ms: float = 0.0
    mad_ms: float = 0.0  # median absolute deviation: the spread a few outliers cannot inflate

    @property
    def spread(self) -> float:
        """MAD over the median: how noisy the machine was while this was timed."""
        return self.mad_ms / self.median_ms if self.median_ms > 0 else 0.0

    @classmethod
    def of(cls, seconds: np.ndarray) -> Timing:
        ms = np.asarray(seconds) * 1e3
        median = float(np.median(ms))
        return cls(median, float(np.percentile(ms, 90)), len(ms), float(np.percentile(ms, 99)),
                   float(np.median(np.abs(ms - median))))


def measure(
    fns: Mapping[Hashable, Callable[[], object]], *, runs: int = 50, warmup: int = 10,
    progress: Callable[[], object] | None = None,
) -> dict[Hashable, Timing]:
    """Median, 90th and 99th percentile and MAD of each callable's wall time, after `warmup` untimed rounds.

    The callables run interleaved, one call each per round, so that drift on a
    noisy machine hits all of them alike and their ratios stay meaningful.
    Each round runs them in a new order (seeded), and each callable twice in
    a row, timing the second call: a timed call finds the caches as a call of
    its own left them, as a device's steady stream of requests would, not as
    whichever callable came before (in a fixed order one would always follow
    the same, say a large graph, and pay for it every time).
    `progress` is called after every round, warm-up included (a progress bar's update).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
        if progress:
            progress()
    samples = {name: np.empty(runs) for name in fns}
    names, order = list(fns), np.random.default_rng(0)
    for i in range(runs):
        for index in order.permutation(len(names)):
            name, fn = names[index], fns[names[index]]
            fn()
            start = time.perf_counter()
            fn()
            samples[name][i] = time.perf_counter() - start
        if progress:
            progress()
    return {name: Timing.of(s) for name, s in samples.items()}
