"""Hold a latency objective under changing load: pick each request's operating point from the queue in front of it.

URNet's motivation is a network that shrinks when load rises. Here any
bundle does, through its budgets (runtime/serving/budgets.py): the controller sets
each request's `budget_ms` to the dearest level of the device's latency table
that still lets the request and the ones waiting before it finish within the
objective. A DRNet or BlockDrop bundle stays input-adaptive within that
budget; switching whole sub-networks on load alone (Dynamic-OFA) is not.

Two corrections keep it honest on a real device: the table's latencies are
scaled by the ratio of observed to tabled service time (a moving average),
and the planning margin tightens while the recent p95, queueing included,
exceeds the objective and relaxes once it is back under.
"""

from __future__ import annotations

import bisect
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.session import RunResult, Session

__all__ = ["AdaptiveController", "Served", "Soak", "replay", "replay_stream", "soak"]


@dataclass(frozen=True)
class Served:
    """One request: when it arrived, started and finished (seconds), at which budget, and what it answered."""

    request: int
    arrival: float
    start: float
    finish: float
    budget_ms: float
    path: str
    logits: np.ndarray

    @property
    def latency_ms(self) -> float:
        """End to end, queueing included."""
        return (self.finish - self.arrival) * 1e3


class AdaptiveController:
    def __init__(
        self, session: Session, objective_ms: float, *, margin: float = 0.8, window: int = 100, smoothing: float = 0.1,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`objective_ms`: the p95 of end-to-end latency to hold. `margin`: the share of it the plan may fill.
        `window`: requests over which the p95 is watched. `smoothing`: weight of each new observed/tabled ratio.
        `timer`: what service times are measured with (time.thread_time leaves other jobs' preemptions out)."""
        if session.table is None:
            raise ValueError("the controller plans with the device's latency table: runtime.load(..., table=TABLE.json) "
                             "(make it with `python -m runtime.profile table`)")
        if not objective_ms > 0 or not 0 < margin <= 1:
            raise ValueError(f"need objective_ms > 0 and 0 < margin <= 1, got {objective_ms}, {margin}")
        self.session, self.objective_ms = session, objective_ms
        self.levels = sorted({p.latency.median_ms for p in session.table.points})  # budgets, cheapest first
        self.tabled = {p.name: p.latency.median_ms for p in session.table.points if p.kind == "path"}
        self.initial_margin = self.margin = margin
        self.smoothing = smoothing
        self.correction = 1.0  # observed service time / tabled latency
        self.recent: deque[float] = deque(maxlen=window)
        self.timer = timer

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.recent, 95)) if self.recent else 0.0

    def budget_for(self, queued: int) -> float:
        """The dearest level at which this request and the `queued` ones behind it drain within the planned share."""
        allowance = self.objective_ms * self.margin / (queued + 1)
        fitting = [level for level in self.levels if level * self.correction <= allowance]
        return fitting[-1] if fitting else self.levels[0]

    def run(self, image: np.ndarray, queued: int) -> tuple[RunResult, float, float]:
        """Serve one image with `queued` requests waiting behind it: (result, budget_ms, service seconds)."""
        budget = self.budget_for(queued)
        start = self.timer()
        result = self.serve(image, budget)
        seconds = self.timer() - start
        # What the table expected: the path's own row (DRNet, BlockDrop), or the level's point (URNet's S).
        tabled = max(self.tabled.get(result.paths[0], budget), 1e-6)
        self.correction += self.smoothing * (seconds * 1e3 / tabled - self.correction)
        return result, budget, seconds

    def serve(self, image: np.ndarray, budget_ms: float) -> RunResult:
        """Run one image within `budget_ms`; the input-adaptive choice is the session's (runtime/serving/budgets.py)."""
        return self.session.run(image, budget_ms=budget_ms)

    def observe(self, latency_ms: float) -> None:
        """A request finished, `latency_ms` after it arrived: tighten the plan while the p95 is over the objective."""
        self.recent.append(latency_ms)
        if len(self.recent) >= 20:
            if self.p95_ms > self.objective_ms:
                self.margin = max(0.2, self.margin * 0.97)
            elif self.p95_ms < 0.8 * self.objective_ms:
                self.margin = min(self.initial_margin, self.margin * 1.01)


def replay(controller: AdaptiveController, images: Sequence[np.ndarray], arrivals: Sequence[float]) -> list[Served]:
    """Serve requests arriving at `arrivals` (seconds, ascending) one at a time, in order, on a simulated clock.

    Service times are the real ones, measured as each request runs on this
    machine; only the waiting is simulated, so a stream of minutes replays in
    the time its compute takes.
    """
    return list(replay_stream(controller, images, arrivals))


def replay_stream(
    controller: AdaptiveController, images: Sequence[np.ndarray], arrivals: Sequence[float]
) -> Iterator[Served]:
    """`replay`, one request at a time: a long stream need not be held in memory."""
    if len(images) != len(arrivals) or any(b < a for a, b in zip(arrivals, arrivals[1:])):
        raise ValueError("need one ascending arrival time per image")
    free = 0.0
    for index, (image, arrival) in enumerate(zip(images, arrivals)):
        start = max(arrival, free)
        queued = max(0, bisect.bisect_right(arrivals, start) - index - 1)  # arrived before it could start
        result, budget, seconds = controller.run(image, queued)
        free = start + seconds
        request = Served(index, arrival, start, free, budget, result.paths[0], result.logits[0])
        controller.observe(request.latency_ms)
        yield request


@dataclass(frozen=True)
class Soak:
    """A long stream through the controller: resident memory along it, and how its latency held."""

    requests: int
    warmup: int  # requests after which memory is taken as settled
    resident_mb: list[tuple[int, float]]  # (requests served, resident MB), sampled along the stream
    within_objective: float  # share of requests after warm-up within the objective

    @property
    def growth(self) -> float:
        """Largest resident size after warm-up over the size at warm-up's end, minus 1."""
        settled = [mb for served, mb in self.resident_mb if served >= self.warmup]
        return max(settled) / settled[0] - 1


def soak(
    controller: AdaptiveController, images: Sequence[np.ndarray], arrivals: Sequence[float], *,
    warmup: int = 1000, every: int = 250,
) -> Soak:
    """Serve the whole stream, sampling resident memory every `every` requests: does anything leak?

    Any error is raised: a soak passes only if every request is answered, in order.
    """
    if not 0 < warmup < len(arrivals):
        raise ValueError(f"warmup must lie between 0 and the stream's {len(arrivals)} requests, got {warmup}")
    samples, within, expected = [], 0, 0
    for request in replay_stream(controller, images, arrivals):
        if request.request != expected:
            raise RuntimeError(f"request {expected} was answered as {request.request}: out of order")
        expected += 1
        if expected > warmup:
            within += request.latency_ms <= controller.objective_ms
        if expected % every == 0 or expected == warmup:
            samples.append((expected, _resident_mb()))
    return Soak(expected, warmup, samples, within / (expected - warmup))


def _resident_mb() -> float:
    """This process's resident set now (Linux /proc), else its peak so far (getrusage), in MB."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except FileNotFoundError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        return peak / (2**20 if sys.platform == "darwin" else 2**10)
