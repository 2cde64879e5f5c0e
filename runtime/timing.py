"""The one timing function: the profiler, the benchmarks and the exporter all measure with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Timing", "measure"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int


def measure(fn: Callable[[], object], *, runs: int = 50, warmup: int = 10) -> Timing:
    """Median and 90th percentile wall time of `fn()`, after `warmup` untimed calls."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    for _ in range(warmup):
        fn()
    samples = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return Timing(float(np.median(samples) * 1e3), float(np.percentile(samples, 90) * 1e3), runs)
