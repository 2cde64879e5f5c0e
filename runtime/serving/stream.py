"""A camera's frames, latest first: a late frame is worth nothing, so overload skips frames and shrinks the network.

Frames come at a fixed rate; frame k is captured `k / fps` seconds after
the stream starts and is due one frame interval later. Whenever the worker
is free it takes the newest frame captured so far: the older ones it never
got to are skipped as superseded. It runs that frame at the dearest level
predicted to finish before the frame is due (runtime/serving/deadline.py),
so the operating point follows the frame interval and the device's speed;
a frame with too little of its interval left for even the cheapest point is
skipped as stale. Every frame yields one `Frame`: processed or skipped, and why.

`frames` is any iterable: a camera whose iterator blocks until the next frame,
or a list. On a VirtualClock (runtime/serving/clock.py) a stream of minutes
runs in the seconds its compute takes, and the device can be slowed down.

    >>> for frame in serve_stream(DeadlinePolicy(session), camera, fps=30):   # doctest: +SKIP
    ...     if frame.status == PROCESSED:
    ...         show(frame.logits.argmax())
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from runtime.serving.clock import Clock, RealClock
from runtime.serving.deadline import DeadlinePolicy

__all__ = ["PROCESSED", "SKIPPED", "Frame", "serve_stream"]

PROCESSED, SKIPPED = "processed", "skipped"


@dataclass(frozen=True)
class Frame:
    """One frame of the stream: processed, or skipped with its reason ("superseded" or "stale"). Seconds."""

    index: int
    capture: float
    due: float  # one frame interval after capture
    status: str
    reason: str = ""
    finish: float | None = None
    level: str | None = None
    path: str | None = None
    logits: np.ndarray | None = None

    @property
    def on_time(self) -> bool:
        return self.status == PROCESSED and self.finish <= self.due


def serve_stream(
    policy: DeadlinePolicy, frames: Iterable[np.ndarray], fps: float, *, clock: Clock | None = None,
) -> Iterator[Frame]:
    """Serve `frames`, captured at `fps`, newest first; yields every frame once, in order, processed or skipped."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    clock = clock or RealClock()
    interval, origin = 1.0 / fps, clock.now()
    source, index = iter(frames), 0  # index: the next frame not yet taken from `source`
    while True:
        now = clock.now()
        newest = math.floor((now - origin) * fps + 1e-9)  # the last frame captured by now
        if newest < index:
            clock.wait_until(origin + index * interval)
            continue
        for skipped in range(index, newest):  # captured while the worker was busy: a newer one is here
            if next(source, None) is None:
                return
            capture = origin + skipped * interval
            yield Frame(skipped, capture, capture + interval, SKIPPED, "superseded")
        image, index = next(source, None), newest + 1
        if image is None:
            return
        capture = origin + newest * interval
        due = capture + interval
        started = clock.timer()
        level = policy.choose((due - now) * 1e3)
        if level is None:
            yield Frame(newest, capture, due, SKIPPED, "stale")
            continue
        result = policy.run(image, level)
        took = clock.served(clock.timer() - started)
        policy.observe(level, result, took * 1e3)
        yield Frame(newest, capture, due, PROCESSED, "", clock.now(), level.point, result.paths[0], result.logits[0])
