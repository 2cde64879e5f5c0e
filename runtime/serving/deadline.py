"""Choose each request's operating point from the slack its deadline leaves: the most accurate that finishes in time.

SuperServe's SlackFit picks a sub-network from a request's remaining slack;
Clockwork holds tight objectives because it predicts latency and refuses what
cannot finish in time. Here the points are budget levels: level k is the
tabled latency of the k-th point on the cost-accuracy frontier of the
device's latency table, and a run at that level admits every frontier point
that fits (runtime/serving/budgets.py), so a DRNet or BlockDrop bundle still
spends less on easy images within what the deadline allows. At the cheapest
level one path is admitted and the selector is skipped (docs/bundle.md).

A level's expected service time is its tabled latency (its dearest point:
the worst case) times the device's current slowdown, an exponential average
of observed over tabled service time; its tail adds a headroom, the 95th
percentile of the recent observed/expected ratios, once. A run must fit its
slack at expected plus tail; a queue of n runs is planned at n expected
runs plus one tail, since their errors do not all fall the same way. The
plan widens by itself when the device grows noisy, and follows it when it
slows down.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from runtime.session import RunResult, Session

__all__ = ["Level", "DeadlinePolicy"]


@dataclass(frozen=True)
class Level:
    """What a run may spend: `budget_ms` for Session.run, the tabled latency of `point`, its dearest point."""

    point: str
    budget_ms: float
    top1: float | None  # the exporter's measured top-1 of `point`; None: not measured


def frontier_levels(session: Session) -> tuple[Level, ...]:
    """The table's points, cheapest first, less any that a cheaper point matches or beats on top-1."""
    top1 = {p.name: p.top1 for p in session.manifest.accuracy.points} if session.manifest.accuracy else {}
    levels: list[Level] = []
    for row in sorted(session.table.points, key=lambda row: row.latency.median_ms):
        level = Level(row.name, row.latency.median_ms, top1.get(row.name))
        if levels and level.top1 is not None and levels[-1].top1 is not None and level.top1 <= levels[-1].top1:
            continue  # dearer and no more accurate than one already taken
        if levels and level.budget_ms == levels[-1].budget_ms:
            levels[-1] = level  # the same budget admits both: the later is the dearer point
            continue
        levels.append(level)
    return tuple(levels)


class DeadlinePolicy:
    """Predicts each level's service time on this device now, and picks the dearest level that fits a slack."""

    def __init__(
        self, session: Session, *, smoothing: float = 0.2, window: int = 256, quantile: float = 95.0, warmup: int = 3,
        probe_after: int = 8,
    ) -> None:
        """`smoothing`: weight of each new observed/tabled ratio in the slowdown. `window`: recent services whose
        prediction errors set the headroom, at their `quantile`. `warmup`: unobserved runs per level first, so that
        a backend's first, slow calls are not taken for the device's speed. `probe_after`: requests in a row that no
        level fits, after which one whose slack the cheapest fits without its tail runs as a probe: a policy that
        runs nothing learns nothing, and would refuse forever once a slowdown has passed."""
        if session.table is None or not session.device:
            raise ValueError("serving to deadlines plans with the device's latency table: runtime.load(bundle, "
                             "device=..., table=TABLE.json) (make it with `python -m runtime.profile table`)")
        if not 0 < smoothing <= 1 or window < 8 or not 50 <= quantile <= 100:
            raise ValueError(f"need 0 < smoothing <= 1, window >= 8, 50 <= quantile <= 100; got {smoothing}, "
                             f"{window}, {quantile}")
        self.session = session
        self.levels = frontier_levels(session)
        self.tabled = {row.name: row.latency.median_ms for row in session.table.points}
        self.smoothing, self.quantile = smoothing, quantile
        self.slowdown = 1.0  # observed service time / tabled latency, averaged
        self.errors: deque[float] = deque(maxlen=window)  # observed / predicted, recent services
        self.headroom = 1.0
        self.observed = 0
        self.probe_after, self.unfit = probe_after, 0  # requests in a row that no level fitted
        self.scaled = [level.budget_ms for level in self.levels]  # predicted ms per level, kept current by observe
        side = session.manifest.preprocessing.resolution
        blank = np.zeros((1, side, side, 3), dtype=np.uint8)
        manifest = session.manifest
        for _ in range(warmup):  # every graph a level may run, then each level's budget
            for point in manifest.dispatch.operating_points(manifest.graphs):
                session.run(blank, **point.options)
            for level in self.levels:
                self.run(blank, level)

    @property
    def cheapest(self) -> Level:
        return self.levels[0]

    @property
    def cheapest_ms(self) -> float:
        """The cheapest level's expected service time, tail excluded."""
        return self.cheapest.budget_ms * self.slowdown

    @property
    def tail_ms(self) -> float:
        """What a run at the cheapest level may take beyond its expected time (the 95th percentile)."""
        return self.cheapest_ms * (self.headroom - 1)

    def predict_ms(self, level: Level) -> float:
        """How long a run at `level` will take here, now, at worst: expected and tail."""
        return level.budget_ms * self.slowdown * self.headroom

    def choose(self, slack_ms: float, pace_ms: float = float("inf")) -> Level | None:
        """The dearest (most accurate) level predicted to finish within `slack_ms` and expected to take no more than
        `pace_ms` (the time between arrivals that the load leaves each request); None if not even the cheapest."""
        chosen = None
        for level, ms in zip(self.levels, self.scaled):
            if ms > slack_ms or (chosen is not None and ms / self.headroom > pace_ms):
                break
            chosen = level
        if chosen is None:
            self.unfit += 1
            if self.unfit >= self.probe_after and self.cheapest_ms <= slack_ms:
                chosen = self.cheapest  # a probe
        if chosen is not None:
            self.unfit = 0
        return chosen

    def run(self, image: np.ndarray, level: Level) -> RunResult:
        return self.session.run(image, budget_ms=level.budget_ms)

    def observe(self, level: Level, result: RunResult, service_ms: float) -> None:
        """A run at `level` took `service_ms` (decision included): follow the device's speed and its noise."""
        tabled = self.tabled.get(result.paths[0], level.budget_ms)  # what ran: a path's own row, else the level's
        ratio = min(service_ms / tabled, 2 * self.slowdown)  # a stall (a preemption) moves it little; a 2x slowdown
        # still shows within a few runs
        self.errors.append(ratio / self.slowdown)  # against the slowdown as it stood: the error headroom covers
        self.slowdown += self.smoothing * (ratio - self.slowdown)
        self.observed += 1
        if self.observed % 16 == 0 or self.observed == 8:  # a percentile every 16 runs keeps the work small
            self.headroom = max(1.0, float(np.percentile(self.errors, self.quantile)))
        factor = self.slowdown * self.headroom
        self.scaled = [level.budget_ms * factor for level in self.levels]
