"""Serving to deadlines: the policy's choice from a hand-computed slack, refusals with their status, stale frames
skipped, the selector skipped when a budget admits one path, and Session.run from several threads.

The policy tests serve a stand-in session whose points take fixed times on a
virtual clock (runtime/serving/clock.py), so that each decision can be
computed by hand; the last two run a real bundle.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import runtime
from runtime.format.latency_table import GraphRow, Latency, LatencyTable, PointRow
from runtime.format.manifest import Accuracy, PointAccuracy
from runtime.serving.clock import VirtualClock
from runtime.serving.deadline import DeadlinePolicy
from runtime.serving.server import ANSWERED, REFUSED, Outcome, Scheduler, Server, replay
from runtime.serving.stream import PROCESSED, SKIPPED, serve_stream
from runtime.session import RunResult

# name: (tabled ms, top-1); "odd" costs more than "small" and is less accurate than it, so no level keeps it
POINTS = {"small": (2.0, 0.70), "odd": (2.5, 0.60), "medium": (4.0, 0.80), "full": (8.0, 0.90)}


def latency(ms: float) -> Latency:
    return Latency(ms, ms, ms, 0.0, 10)


class StandIn:
    """What DeadlinePolicy needs of a Session: a latency table, accuracies, and run(image, budget_ms=) that spends
    its point's tabled time on a clock of its own (`elapsed`), which a VirtualClock reads as its timer."""

    device = "host-cpu"

    def __init__(self, points: dict[str, tuple[float, float]] = POINTS, sleep: bool = False) -> None:
        self.points, self.sleep, self.elapsed = points, sleep, 0.0
        self.table = LatencyTable(
            bundle="stand-in", manifest_sha256="0" * 64, family="drnet", device="host-cpu", backend="none",
            backend_detail="stand-in", threads=1, created="", command="", warmup=0, runs=10, noise_threshold=0.1,
            preprocess=latency(0.0), reference="full", static=latency(8.0), session_overhead_ms=0.0,
            dispatch_ms_per_call=0.0, graphs={"full": GraphRow("full", 8, {1: latency(8.0)})},
            points=[PointRow(name, "path", None, ms * 1e6, {}, latency(ms), ms) for name, (ms, _) in points.items()],
            fit=None,
        )
        accuracy = Accuracy("test", 100, [PointAccuracy(name, "path", None, top1) for name, (_, top1) in points.items()])
        self.manifest = SimpleNamespace(accuracy=accuracy, preprocessing=SimpleNamespace(resolution=8))

    def run(self, image, *, budget_ms: float) -> RunResult:
        name = max((n for n, (ms, _) in self.points.items() if ms <= budget_ms), key=lambda n: self.points[n][0])
        self.elapsed += self.points[name][0] / 1e3
        if self.sleep:
            time.sleep(self.points[name][0] / 1e3)
        return RunResult(np.zeros((1, 10), np.float32), [name], np.array([1]))


def virtual(session: StandIn, slowdown=None) -> VirtualClock:
    clock = VirtualClock(slowdown=slowdown)
    clock.timer = lambda: session.elapsed  # services take exactly their tabled time (times the slowdown)
    return clock


def test_the_policy_runs_the_dearest_level_that_leaves_room_for_the_requests_behind():
    policy = DeadlinePolicy(StandIn(), warmup=0)
    assert [level.point for level in policy.levels] == ["small", "medium", "full"]  # "odd" is beaten by "small"
    assert policy.choose(8.0).point == "full" and policy.choose(7.9).point == "medium"
    assert policy.choose(1.9) is None
    assert policy.choose(20.0, pace_ms=3.0).point == "small"  # arrivals every 3 ms leave no room for medium's 4
    scheduler = Scheduler(policy, objective_ms=10.0)
    head = scheduler.admit("a", 0.0)
    scheduler.admit("b", 0.005, deadline_ms=7.0)
    # By hand, at 5 ms: the head has 5 ms left; b, due at 12 ms, needs the cheapest 2 ms after it, so the head may
    # take 5 ms: medium (4 ms), which also keeps pace with arrivals 5 ms apart (90%: 4.5 ms)
    taken, level, reason = scheduler.take(0.005)
    assert taken is head and level.point == "medium" and reason == ""
    assert scheduler.busy_until == pytest.approx(0.009)


def test_a_request_that_cannot_finish_in_time_is_refused_at_once_with_its_reason_or_served_late_if_asked():
    session = StandIn()
    scheduler = Scheduler(DeadlinePolicy(session, warmup=0), objective_ms=10.0)
    # By hand: the k-th request at time 0 finishes at (k + 1) x 2 ms at the cheapest point: five fit in 10 ms
    admitted = [scheduler.admit(f"image {k}", 0.0) for k in range(6)]
    refused = admitted[-1]
    assert isinstance(refused, Outcome) and refused.status == REFUSED and refused.finish == 0.0
    assert refused.reason.startswith("deadline: predicted to finish 12.000 ms after arrival at the cheapest point "
                                     "(small, 5 queued ahead), beyond its 10.000 ms")
    assert not any(isinstance(a, Outcome) for a in admitted[:5])
    assert not isinstance(scheduler.admit("image 6", 0.0, late=True), Outcome)  # the caller chose: served late

    clock = virtual(session)
    outcomes = [scheduler.serve(clock) for _ in range(6)]
    assert [o.request for o in outcomes] == [0, 1, 2, 3, 4, 6]
    assert all(o.status == ANSWERED for o in outcomes) and [o.on_time for o in outcomes] == [True] * 5 + [False]
    assert outcomes[-1].level == "small" and "deadline" in outcomes[-1].reason


def test_replay_answers_or_refuses_every_request_in_order():
    session = StandIn()
    arrivals = list(np.arange(200) * 0.001)  # 1 ms apart: twice what the cheapest point sustains
    outcomes = list(replay(Scheduler(DeadlinePolicy(session, warmup=0), 10.0), ["x"] * 200, arrivals,
                           clock=virtual(session)))
    assert sorted(o.request for o in outcomes) == list(range(200))
    answered = [o.request for o in outcomes if o.status == ANSWERED]
    assert answered == sorted(answered)
    assert all(o.on_time for o in outcomes if o.status == ANSWERED)
    refused = sum(o.status == REFUSED for o in outcomes)
    assert 90 <= refused <= 110  # the excess of 1 ms arrivals over 2 ms services is half


def test_stale_frames_are_skipped_and_counted_and_the_point_follows_the_frame_interval():
    session = StandIn({"small": (1.0, 0.7), "full": (3.0, 0.9)})
    policy = DeadlinePolicy(session, warmup=0)
    # Frames every 2 ms. The first service stalls 7.5x (7.5 ms): frames 1 and 2 are superseded by frame 3, which,
    # due at 8 ms, has 0.5 ms left, below the cheapest point's 1.2 ms (the stall taught the policy a 1.2x slowdown).
    clock = virtual(session, slowdown=lambda now: 7.5 if now < 0.001 else 1.0)
    frames = list(serve_stream(policy, ["frame"] * 6, fps=500, clock=clock))
    assert [f.index for f in frames] == list(range(6))
    assert [(f.status, f.reason) for f in frames[:4]] == [
        (PROCESSED, ""), (SKIPPED, "superseded"), (SKIPPED, "superseded"), (SKIPPED, "stale")]
    assert not frames[0].on_time and frames[0].finish == pytest.approx(0.0075)
    assert [f.status for f in frames[4:]] == [PROCESSED, PROCESSED] and all(f.on_time for f in frames[4:])
    assert {f.level for f in frames[4:]} == {"small"}  # 2 ms per frame leaves no room for full's 3 ms
    with pytest.raises(ValueError, match="fps must be a positive number"):
        next(serve_stream(policy, [], fps=0))


def test_the_server_thread_answers_from_a_queue_and_refuses_at_once():
    session = StandIn(sleep=True)
    with Server(session, objective_ms=10.0, policy=DeadlinePolicy(session, warmup=0)) as server:
        futures = [server.submit(np.zeros((1, 8, 8, 3), np.uint8)) for _ in range(12)]
        outcomes = [f.result(timeout=5) for f in futures]
    assert [o.request for o in outcomes] == list(range(12))
    assert {o.status for o in outcomes} == {ANSWERED, REFUSED} and outcomes[0].status == ANSWERED
    refusals = [o for o in outcomes if o.status == REFUSED]
    assert all(o.reason.startswith("deadline") for o in refusals)


@pytest.fixture(scope="module")
def host_session(onnx_bundle):
    from runtime.format.devices import get_device

    return runtime.load(onnx_bundle, device=get_device("host-cpu"))


def test_a_budget_that_admits_one_path_skips_the_selector_and_counts_only_that_path(host_session, digits_test):
    manifest = host_session.manifest
    dispatch = manifest.dispatch
    points = sorted(dispatch.operating_points(manifest.graphs), key=lambda p: p.macs)
    cheapest = points[0]
    images = digits_test[0][:8]
    called = []

    def record(name, inputs, run):
        called.append(name)
        return run(inputs)

    with host_session.hooked(record):
        result = host_session.run(images, budget_macs=cheapest.macs)
    forced = host_session.run(images, path=cheapest.name)
    assert dispatch.selector not in called
    assert result.paths == [cheapest.name] * len(images)
    assert result.macs.tolist() == [cheapest.macs - manifest.graphs[dispatch.selector].macs] * len(images)
    np.testing.assert_array_equal(result.logits, forced.logits)
    assert forced.macs.tolist() == [cheapest.macs] * len(images)  # path= still runs and counts the selector
    called.clear()
    with host_session.hooked(record):
        host_session.run(images)  # every path admitted: the selector chooses
    assert dispatch.selector in called


def test_session_run_from_four_threads_gives_every_single_threaded_result(host_session, digits_test):
    images = digits_test[0][:64]
    points = host_session.manifest.dispatch.operating_points(host_session.manifest.graphs)
    requests = [{}, {"static": True}, {"budget_macs": float(max(p.macs for p in points))},
                *({"path": p.name} for p in points)]
    jobs = [(i, images[i : i + 1 + i % 3], requests[i % len(requests)]) for i in range(len(images))]
    alone = {i: host_session.run(batch, **request) for i, batch, request in jobs}
    together, errors = {}, []

    def worker(mine):
        try:
            for _ in range(3):
                for i, batch, request in mine:
                    together.setdefault(i, []).append(host_session.run(batch, **request))
        except Exception as error:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(jobs[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(together) == sorted(alone)
    for i, results in together.items():
        for result in results:
            assert result.paths == alone[i].paths and result.macs.tolist() == alone[i].macs.tolist()
            np.testing.assert_array_equal(result.logits, alone[i].logits)
