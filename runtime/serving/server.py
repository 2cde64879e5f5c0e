"""Serve requests to deadlines, one worker in arrival order: admit, choose a point, answer or refuse.

Every request carries a deadline (its own, or the server's objective). At
submission, a request that would finish late even if it and every request
before it ran at the cheapest point is refused at once (Clockwork's
admission), unless its caller asked for it to be served late. When the
worker takes a request, it runs the dearest level that fits both its own
slack and the requests queued behind it (each still able to finish at the
cheapest point), and whose expected time keeps pace with the arrivals (90%
of the mean time between them, an exponential average): a level dearer
than the load allows would be paid for by refusals later.
runtime/serving/deadline.py chooses. A request whose slack has gone
by then is refused, or served late at the cheapest point. Nothing is
dropped: every request gets one Outcome; answers come in submission order,
and a refusal comes no later than the next answer.

`Server` runs the worker as a thread fed from a thread-safe queue, the way
an app calls it; `replay` runs the same Scheduler on a virtual clock
(runtime/serving/clock.py), for arrivals faster than real time.

    >>> with Server(session, objective_ms=5.0) as server:      # doctest: +SKIP
    ...     outcome = server.submit(image).result()
    >>> outcome.status, outcome.path, outcome.latency_ms       # doctest: +SKIP
    ('answered', 'res24', 1.9)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from runtime.serving.clock import Clock, RealClock, VirtualClock
from runtime.serving.deadline import DeadlinePolicy, Level
from runtime.session import RunResult, Session

__all__ = ["ANSWERED", "REFUSED", "Outcome", "Scheduler", "Server", "replay"]

ANSWERED, REFUSED = "answered", "refused"
GAP_SMOOTHING = 0.05  # weight of each new time between arrivals in their mean: about the last 20 arrivals
UTILISATION = 0.9  # the share of the time between arrivals a request's level may expect to take


@dataclass(frozen=True)
class Outcome:
    """One request's answer or refusal. Times in seconds on the serving clock."""

    request: int
    status: str  # ANSWERED or REFUSED
    arrival: float
    deadline: float
    finish: float  # when it was answered or refused
    reason: str = ""  # why it was refused, or why it was served although predicted late
    start: float | None = None
    level: str | None = None  # the level it ran at (its dearest point)
    path: str | None = None  # the path it took
    logits: np.ndarray | None = None
    decision_us: float = 0.0  # the policy's own work for it, admission and choice

    @property
    def latency_ms(self) -> float:
        """End to end, queueing included."""
        return (self.finish - self.arrival) * 1e3

    @property
    def on_time(self) -> bool:
        return self.status == ANSWERED and self.finish <= self.deadline


@dataclass
class Pending:
    request: int
    image: np.ndarray
    arrival: float
    deadline: float
    late: bool  # serve it even if it cannot finish by its deadline
    decision_s: float = 0.0
    start: float = 0.0  # when its turn came


class Scheduler:
    """The queue and its decisions, on whatever clock its caller reads: not thread-safe (Server holds a lock)."""

    def __init__(self, policy: DeadlinePolicy, objective_ms: float, *, late: bool = False) -> None:
        """`objective_ms`: the deadline of a request that brings none, after its arrival. `late`: the default for
        a request that cannot finish in time: served late (True) or refused (False)."""
        if not objective_ms > 0:
            raise ValueError(f"objective_ms must be a positive number of milliseconds, got {objective_ms!r}")
        self.policy, self.objective_ms, self.late = policy, objective_ms, late
        self.pending: deque[Pending] = deque()
        self.busy_until = 0.0  # when the request being served is predicted to finish
        self.submitted = 0
        self.last_arrival: float | None = None
        self.gap_s = float("inf")  # mean time between arrivals, averaged with weight GAP_SMOOTHING

    def admit(
        self, image: np.ndarray, now: float, *, deadline_ms: float | None = None, late: bool | None = None,
    ) -> Pending | Outcome:
        """Queue a request arriving `now` (deadline `deadline_ms` after it, default the objective), or refuse it:
        even at the cheapest point, it and those before it would not finish by its deadline."""
        started = time.perf_counter()
        if deadline_ms is not None and not deadline_ms > 0:
            raise ValueError(f"deadline_ms must be a positive number of milliseconds, got {deadline_ms!r}")
        request = self.submitted
        self.submitted += 1
        if self.last_arrival is not None:
            gap = now - self.last_arrival
            self.gap_s = gap if self.gap_s == float("inf") else self.gap_s + GAP_SMOOTHING * (gap - self.gap_s)
        self.last_arrival = now
        deadline = now + (self.objective_ms if deadline_ms is None else deadline_ms) / 1e3
        late = self.late if late is None else late
        cheapest, tail = self.policy.cheapest_ms / 1e3, self.policy.tail_ms / 1e3
        ahead = sum(1 for p in self.pending if not p.late)  # the late ones are served after their own deadlines
        finish = max(now, self.busy_until) + (ahead + 1) * cheapest + tail
        if finish > deadline and not late:
            reason = (f"deadline: predicted to finish {(finish - now) * 1e3:.3f} ms after arrival at the cheapest point "
                      f"({self.policy.cheapest.point}, {ahead} queued ahead), beyond its {(deadline - now) * 1e3:.3f} ms")
            return Outcome(request, REFUSED, now, deadline, now, reason, decision_us=(time.perf_counter() - started) * 1e6)
        pending = Pending(request, image, now, deadline, late, time.perf_counter() - started)
        self.pending.append(pending)
        return pending

    def take(self, now: float) -> tuple[Pending, Level | None, str]:
        """The next request and the level to run it at, or None and the reason it is refused now."""
        started = time.perf_counter()
        head = self.pending.popleft()
        head.start = now
        cheapest, tail = self.policy.cheapest_ms / 1e3, self.policy.tail_ms / 1e3
        slack = head.deadline - now
        limit, behind = slack, 0
        for other in self.pending:  # each one behind must still be able to finish at the cheapest point
            if not other.late:
                behind += 1
                limit = min(limit, other.deadline - now - behind * cheapest)
        level, reason = self.policy.choose(limit * 1e3, UTILISATION * self.gap_s * 1e3), ""
        if level is None:
            if cheapest + tail > slack:
                reason = (f"deadline: {max(slack, 0) * 1e3:.3f} ms left when its turn came, the cheapest point "
                          f"({self.policy.cheapest.point}) is predicted to take {(cheapest + tail) * 1e3:.3f} ms")
                level = self.policy.cheapest if head.late else None
            else:
                level = self.policy.cheapest  # it fits; those behind may not
        if level is not None:
            self.busy_until = now + level.budget_ms * self.policy.slowdown / 1e3  # expected: admission adds the tail
        head.decision_s += time.perf_counter() - started
        return head, level, reason

    def serve(self, clock: Clock) -> Outcome:
        """Take the next request and answer or refuse it, at `clock`'s time."""
        started = clock.timer()
        head, level, reason = self.take(clock.now())
        if level is None:
            return self.refused(head, reason, clock.now())
        return self.answered(head, level, reason, self.policy.run(head.image, level), clock, started)

    @staticmethod
    def refused(head: Pending, reason: str, now: float) -> Outcome:
        return Outcome(head.request, REFUSED, head.arrival, head.deadline, now, reason, decision_us=head.decision_s * 1e6)

    def answered(self, head: Pending, level: Level, reason: str, result: RunResult, clock: Clock,
                 started: float) -> Outcome:
        """`head` ran at `level` since `started` (clock.timer, before its decision): learn from its service time."""
        took = clock.served(clock.timer() - started)  # the decision counts as service
        self.policy.observe(level, result, took * 1e3)
        return Outcome(head.request, ANSWERED, head.arrival, head.deadline, clock.now(), reason, head.start, level.point,
                       result.paths[0], result.logits[0], head.decision_s * 1e6)


class Server:
    """A worker thread serving `session` to deadlines; `submit` from any thread.

    `late`: whether a request that cannot finish in time is served late (True)
    or refused (False, the default); `submit` can say otherwise per request.
    """

    def __init__(self, session: Session, objective_ms: float, *, late: bool = False,
                 policy: DeadlinePolicy | None = None) -> None:
        self.scheduler = Scheduler(policy or DeadlinePolicy(session), objective_ms, late=late)
        self.clock = RealClock()
        self.futures: dict[int, Future] = {}
        self.ready = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="deadline-server", daemon=True)
        self.worker.start()

    def submit(self, image: np.ndarray, *, deadline_ms: float | None = None, late: bool | None = None) -> Future:
        """Queue one image (a batch of one); the future resolves to its Outcome, at once if it is refused."""
        future: Future = Future()
        with self.ready:
            if self.closed:
                raise RuntimeError("this server is closed")
            admitted = self.scheduler.admit(image, self.clock.now(), deadline_ms=deadline_ms, late=late)
            if isinstance(admitted, Outcome):
                future.set_result(admitted)
            else:
                self.futures[admitted.request] = future
                self.ready.notify()
        return future

    def close(self) -> None:
        """Serve what is queued, then stop the worker."""
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.worker.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        """Take under the lock, run outside it (submissions are admitted meanwhile), learn under it again."""
        scheduler = self.scheduler
        while True:
            with self.ready:
                while not scheduler.pending and not self.closed:
                    self.ready.wait()
                if not scheduler.pending:
                    return
                started = self.clock.timer()
                head, level, reason = scheduler.take(self.clock.now())
                future = self.futures.pop(head.request)
                if level is None:
                    future.set_result(scheduler.refused(head, reason, self.clock.now()))
                    continue
            try:
                result = scheduler.policy.run(head.image, level)
            except Exception as error:  # the caller sees it on its future; the worker goes on
                future.set_exception(error)
                continue
            with self.ready:
                outcome = scheduler.answered(head, level, reason, result, self.clock, started)
            future.set_result(outcome)


def replay(
    scheduler: Scheduler, images: Sequence[np.ndarray], arrivals: Sequence[float], *,
    deadlines_ms: Sequence[float | None] | None = None, clock: VirtualClock | None = None,
) -> Iterator[Outcome]:
    """Serve requests arriving at `arrivals` (seconds, ascending) on a virtual clock: service times are measured
    as each request runs here, only the waiting is simulated. Yields each Outcome as it is decided."""
    if len(images) != len(arrivals) or any(b < a for a, b in zip(arrivals, arrivals[1:])):
        raise ValueError("need one ascending arrival time per image")
    clock = clock or VirtualClock(arrivals[0] if len(arrivals) else 0.0)
    deadlines = deadlines_ms or [None] * len(arrivals)
    scheduler.busy_until = clock.now()
    index = 0
    while index < len(arrivals) or scheduler.pending:
        if not scheduler.pending:
            clock.wait_until(arrivals[index])
        while index < len(arrivals) and arrivals[index] <= clock.now():  # admitted as each arrived, in order
            admitted = scheduler.admit(images[index], arrivals[index], deadline_ms=deadlines[index])
            index += 1
            if isinstance(admitted, Outcome):
                yield admitted
        if scheduler.pending:
            yield scheduler.serve(clock)
