"""Hold a latency objective under changing load: pick each request's operating point from the queue in front of it.

URNet's motivation is a network that shrinks when load rises. Here any
bundle does, through its budgets (runtime/budgets.py): the controller sets
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
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.session import RunResult, Session

__all__ = ["AdaptiveController", "Served", "replay"]


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
    ) -> None:
        """`objective_ms`: the p95 of end-to-end latency to hold. `margin`: the share of it the plan may fill.
        `window`: requests over which the p95 is watched. `smoothing`: weight of each new observed/tabled ratio."""
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
        start = time.perf_counter()
        result = self.session.run(image, budget_ms=budget)
        seconds = time.perf_counter() - start
        # What the table expected: the path's own row (DRNet, BlockDrop), or the level's point (URNet's S).
        tabled = max(self.tabled.get(result.paths[0], budget), 1e-6)
        self.correction += self.smoothing * (seconds * 1e3 / tabled - self.correction)
        return result, budget, seconds

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
    if len(images) != len(arrivals) or any(b < a for a, b in zip(arrivals, arrivals[1:])):
        raise ValueError("need one ascending arrival time per image")
    served, free = [], 0.0
    for index, (image, arrival) in enumerate(zip(images, arrivals)):
        start = max(arrival, free)
        queued = max(0, bisect.bisect_right(arrivals, start) - index - 1)  # arrived before it could start
        result, budget, seconds = controller.run(image, queued)
        free = start + seconds
        request = Served(index, arrival, start, free, budget, result.paths[0], result.logits[0])
        controller.observe(request.latency_ms)
        served.append(request)
    return served
