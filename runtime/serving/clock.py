"""The time serving runs on: the wall clock, or a virtual one fed measured service times.

A virtual clock replays minutes of arrivals in the seconds their compute
takes, and can slow the device down on a schedule (a phone under heat):
each service's measured seconds are charged times the slowdown at that
moment. Waiting costs nothing on it. On a shared machine it can measure
services in this thread's CPU time, which other jobs' preemptions leave
out (single-threaded backends compute in the calling thread). The serving code (runtime/serving/server.py,
stream.py) asks only the `Clock` interface, so that one logic runs both ways.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "RealClock", "VirtualClock"]


class Clock(Protocol):
    timer: Callable[[], float]  # what a service is measured with, in seconds

    def now(self) -> float:
        """Seconds, from any origin."""

    def wait_until(self, moment: float) -> None:
        """Return at `moment` (at once if it has passed)."""

    def served(self, seconds: float) -> float:
        """A service just measured at `seconds` of wall time: the seconds it took on this clock."""


class RealClock:
    timer = staticmethod(time.perf_counter)

    def now(self) -> float:
        return time.perf_counter()

    def wait_until(self, moment: float) -> None:
        delay = moment - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def served(self, seconds: float) -> float:
        return seconds  # it has already passed


class VirtualClock:
    """Time that moves only when told: by waits, and by services at `slowdown(now)` times their measured seconds."""

    def __init__(
        self, start: float = 0.0, slowdown: Callable[[float], float] | None = None, *, cpu_time: bool = False,
    ) -> None:
        """`slowdown(now)`: how many times slower than measured the device is at `now`. `cpu_time`: measure
        services in this thread's CPU time instead of wall time."""
        self.moment = start
        self.slowdown = slowdown or (lambda moment: 1.0)
        self.timer = time.thread_time if cpu_time else time.perf_counter

    def now(self) -> float:
        return self.moment

    def wait_until(self, moment: float) -> None:
        self.moment = max(self.moment, moment)

    def served(self, seconds: float) -> float:
        took = seconds * self.slowdown(self.moment)
        self.moment += took
        return took
