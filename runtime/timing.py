"""The one timing function: the profiler, the benchmarks and the exporter all measure with it."""

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


def measure(fns: Mapping[Hashable, Callable[[], object]], *, runs: int = 50, warmup: int = 10) -> dict[Hashable, Timing]:
    """Median and 90th-percentile wall time of each callable, after `warmup` untimed rounds.

    The callables run interleaved, one call each per round, so that drift on a
    noisy machine hits all of them alike and their ratios stay meaningful.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: np.empty(runs) for name in fns}
    for i in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name][i] = time.perf_counter() - start
    return {
        name: Timing(float(np.median(s) * 1e3), float(np.percentile(s, 90) * 1e3), runs) for name, s in samples.items()
    }
