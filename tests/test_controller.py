"""The load-adaptive controller holds a p95 objective while the request rate steps from 0.5x to 2x and back.

The control test serves a stand-in session whose three operating points take
2, 4 and 8 ms on a clock of its own, which the controller reads as its timer:
the outcome depends on the control logic alone, not on this machine's load
(a sleeping stand-in read 31 ms against 30 on a loaded host). A second test
runs a real bundle.
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.serving.controller import AdaptiveController, replay, soak
from runtime.format.devices import get_device
from runtime.format.latency_table import GraphRow, Latency, LatencyTable, PointRow, write_latency_table
from runtime.profile.table import measure_table
from runtime.profile.plots import plot_controller_trace
from runtime.session import RunResult

POINTS = {"small": (2.0, 0.70), "medium": (4.0, 0.80), "full": (8.0, 0.90)}  # name: (ms, accuracy)
OBJECTIVE_MS = 30.0
SETTLE = 60  # requests after a rate step within which the p95 must be back under the objective


def latency(ms: float) -> Latency:
    return Latency(ms, ms, ms, 0.0, 10)


class StandIn:
    """What the controller needs of a Session: a latency table, and run(image, budget_ms=) spending its point's time
    on a clock of its own (`elapsed`, seconds), which the controller's timer reads."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.table = LatencyTable(
            bundle="stand-in", manifest_sha256="0" * 64, family="drnet", device="host-cpu", backend="none",
            backend_detail="stand-in", threads=1, created="", command="", warmup=0, runs=10, noise_threshold=0.1,
            preprocess=latency(0.0), reference="full", static=latency(8.0), session_overhead_ms=0.0,
            dispatch_ms_per_call=0.0,
            graphs={"full": GraphRow("full", 8, {1: latency(8.0)})},
            points=[PointRow(name, "path", None, ms * 1e6, {}, latency(ms), ms) for name, (ms, _) in POINTS.items()],
            fit=None,
        )

    def run(self, image, *, budget_ms: float) -> RunResult:
        name = max((n for n, (ms, _) in POINTS.items() if ms <= budget_ms), key=lambda n: POINTS[n][0], default="small")
        self.elapsed += POINTS[name][0] / 1e3
        return RunResult(np.zeros((1, 10), np.float32), [name], np.array([1]))


def stream(full_rate: float, phases: list[tuple[float, int]], seed: int = 0) -> np.ndarray:
    """Poisson arrivals: per phase, (multiple of the rate the full model sustains, requests)."""
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([rng.exponential(1 / (factor * full_rate), count) for factor, count in phases])
    return np.cumsum(gaps)


def test_p95_returns_under_the_objective_after_each_rate_step_and_nothing_is_lost(tmp_path):
    session = StandIn()
    controller = AdaptiveController(session, OBJECTIVE_MS, timer=lambda: session.elapsed)
    phases = [(0.5, 150), (2.0, 300), (0.5, 200)]
    arrivals = stream(1e3 / POINTS["full"][0], phases)
    served = replay(controller, [None] * len(arrivals), list(arrivals))

    assert [s.request for s in served] == list(range(len(arrivals))), "every request answered, in order"
    trace = plot_controller_trace(served, OBJECTIVE_MS, tmp_path / "trace.png")
    assert trace.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(a.finish <= b.start + 1e-12 for a, b in zip(served, served[1:])), "one at a time, first come first served"
    bounds = np.cumsum([0] + [count for _, count in phases])
    for (factor, _), begin, end in zip(phases, bounds, bounds[1:]):
        settled = [s.latency_ms for s in served[begin + SETTLE : end]]
        p95 = float(np.percentile(settled, 95))
        assert p95 <= OBJECTIVE_MS, f"rate {factor}x: p95 {p95:.1f} ms after {SETTLE} requests"
        taken = [s.path for s in served[begin + SETTLE : end]]
        accuracy = np.mean([POINTS[name][1] for name in taken])
        if factor < 1:  # room to spare: back to the full model, at its accuracy
            assert taken.count("full") / len(taken) >= 0.9 and accuracy >= 0.89
        else:  # 2x the full model's rate: cheaper points, but no cheaper than the load needs
            assert taken.count("full") / len(taken) <= 0.2
            assert accuracy >= POINTS["medium"][1] - 0.06, "mostly the dearest point that sustains 2x"


def test_a_real_bundle_under_the_controller(onnx_bundle, digits_test, tmp_path):
    host = get_device("host-cpu")
    session = runtime.load(onnx_bundle, device=host)
    table = tmp_path / "table.json"
    write_latency_table(table, measure_table(session, host, runs=5, warmup=1))
    session = runtime.load(onnx_bundle, device=host, table=table)
    images = digits_test[0][:200]
    full_ms = session.table.static.median_ms
    arrivals = stream(1e3 / full_ms, [(0.5, 100), (2.0, 100)])
    controller = AdaptiveController(session, objective_ms=20 * full_ms)
    served = replay(controller, [images[i : i + 1] for i in range(len(arrivals))], list(arrivals))
    assert [s.request for s in served] == list(range(len(arrivals)))
    assert {s.budget_ms for s in served} <= set(controller.levels)
    assert all(np.isfinite(s.logits).all() for s in served)


def test_the_controller_needs_the_device_table(onnx_bundle):
    with pytest.raises(ValueError, match="python -m runtime.profile table"):
        AdaptiveController(runtime.load(onnx_bundle), objective_ms=10.0)


@pytest.mark.slow
def test_a_short_soak_keeps_memory_flat(onnx_bundle, digits_test, tmp_path):
    """benchmarks/operating_points.py soaks 10,000 requests; this is its short version."""
    host = get_device("host-cpu")
    table = tmp_path / "table.json"
    write_latency_table(table, measure_table(runtime.load(onnx_bundle, device=host), host, runs=5, warmup=1))
    session = runtime.load(onnx_bundle, device=host, table=table)
    images = digits_test[0]
    arrivals = stream(1e3 / session.table.static.median_ms, [(1.0, 3000)])
    result = soak(AdaptiveController(session, objective_ms=20 * session.table.static.median_ms),
                  [images[i % len(images)][None] for i in range(len(arrivals))], list(arrivals), warmup=1000)
    assert result.requests == 3000 and result.resident_mb[0][0] == 250
    assert result.growth < 0.05, f"resident memory grew {result.growth:.1%} after warm-up: {result.resident_mb}"


def test_a_soak_needs_a_warmup_shorter_than_the_stream():
    with pytest.raises(ValueError, match="warmup must lie between 0 and the stream's 10 requests"):
        soak(AdaptiveController(StandIn(), OBJECTIVE_MS), [None] * 10, list(range(10)), warmup=10)
