"""Measure a bundle's latency table on this device: every graph across batches, and every operating point.

An operating point is what a user can ask `Session.run` for: a path every
image takes (DRNet's resolutions, BlockDrop's cached paths, Resizable's
configurations) or URNet's compute scale S. Everything is timed in one
interleaved measurement (runtime.timing.measure), each call on a new input;
rows whose spread shows a noisy machine are measured again, and flagged if
they stay noisy. The table's format is runtime/latency_table.py.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone

import numpy as np

from runtime.devices import Device
from runtime.files import sha256_of
from runtime.latency_table import GraphRow, Latency, LatencyTable, PointRow, fit_latency
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.preprocess import prepare
from runtime.session import Session
from runtime.timing import Timing, measure

__all__ = ["SCALES", "POOL", "operating_points", "graph_inputs", "measure_table", "predict_run"]

SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)  # URNet's S sweep, as its paper's Table 1
POOL = 16  # distinct inputs per callable, cycled, so that no call replays the one before
REMEASURES = 2  # how many times a noisy row is measured again before it is flagged


def operating_points(manifest: Manifest) -> list[tuple[str, str, float | None, dict]]:
    """(name, kind, value, Session.run options) for every point of the bundle."""
    if manifest.rule.takes_scale:
        return [(f"S={s:g}", "scale", s, {"scale": s}) for s in SCALES]
    paths = manifest.dispatch.probe_paths(manifest.graphs)
    return [(path, "path", None, {"path": path}) for path in paths]


@contextlib.contextmanager
def _counting_calls(session: Session) -> Iterator[Counter]:
    """Count the session's graph calls while inside."""
    counts: Counter = Counter()
    with session.observing(lambda name, _: counts.update((name,))):
        yield counts


def graph_inputs(graph, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random inputs for `graph` at `batch`; a compute scale is drawn in [0, 1]."""
    return [
        rng.uniform(size=(batch, *spec.shape)).astype(np.float32) if spec.name == "scale"
        else rng.standard_normal((batch, *spec.shape)).astype(np.float32)
        for spec in graph.inputs
    ]


def _latency(timing: Timing, remeasured: int, threshold: float) -> Latency:
    return Latency(timing.median_ms, timing.p90_ms, timing.p99_ms, timing.mad_ms, timing.runs,
                   timing.spread > threshold, remeasured)


def _measure_quietly(
    fns: dict[Hashable, Callable[[], object]], *, runs: int, warmup: int, threshold: float,
    progress: Callable[[], object] | None = None,
) -> dict[Hashable, Latency]:
    """measure(), then the rows noisier than `threshold` (MAD / median) again, up to REMEASURES times."""
    times = measure(fns, runs=runs, warmup=warmup, progress=progress)
    attempts = dict.fromkeys(fns, 0)
    for attempt in range(1, REMEASURES + 1):
        noisy = {key: fns[key] for key, t in times.items() if t.spread > threshold}
        if not noisy:
            break
        times.update(measure(noisy, runs=runs, warmup=warmup, progress=progress))
        attempts.update(dict.fromkeys(noisy, attempt))
    return {key: _latency(t, attempts[key], threshold) for key, t in times.items()}


def _check_threads(session: Session, device: Device) -> str:
    """What runs, refusing a backend that did not take the device's thread count."""
    detail = session.backend.describe()
    if device.threads is not None and f"threads={device.threads}" not in detail:
        raise RuntimeError(f"device {device.name} pins {device.threads} threads; the backend runs {detail}")
    return detail


def measure_table(
    session: Session, device: Device, *, runs: int = 100, warmup: int = 10, batches: Sequence[int] = (1,),
    images: np.ndarray | None = None, noise_threshold: float = 0.1, command: str = "",
    progress: Callable[[], object] | None = None,
) -> LatencyTable:
    """The latency table of `session`'s bundle on `device`.

    `images`, uint8 NHWC, feed the operating points and the pipeline (its
    real selector decisions); without them, random uint8 images at the
    bundle's resolution feed the points, and there is no pipeline row.
    `progress` is called after every round of interleaved calls (runtime.timing.measure).
    """
    manifest, rng = session.manifest, np.random.default_rng(0)
    detail = _check_threads(session, device)
    if 1 not in batches or any(b < 1 or b > manifest.max_batch for b in batches):
        raise ValueError(f"batches must include 1 (predictions add graphs called alone) and lie in "
                         f"1..{manifest.max_batch} (the bundle's max_batch), got {list(batches)}")
    side, channels = manifest.preprocessing.resolution, len(manifest.preprocessing.mean)
    if images is None:
        pool = rng.integers(0, 256, (POOL, side, side, channels), dtype=np.uint8)
    else:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 NHWC, got {images.dtype} of shape {images.shape}")
        pool = images
    singles = [pool[i : i + 1] for i in range(len(pool))]
    next_single = itertools.cycle(singles).__next__
    points = operating_points(manifest)

    def graph_call(name: str, batch: int) -> Callable[[], object]:
        run = session.graphs[name]
        inputs = itertools.cycle([graph_inputs(manifest.graphs[name], batch, rng) for _ in range(POOL)]).__next__
        return lambda: run(inputs())

    def point_call(options: dict) -> Callable[[], object]:
        return lambda: session.run(next_single(), **options)

    fns: dict[Hashable, Callable[[], object]] = {
        ("preprocess",): lambda: prepare(next_single(), manifest.preprocessing),
        ("static",): lambda: session.run(next_single(), static=True),
    }
    fns.update({("graph", name, b): graph_call(name, b) for name in manifest.graphs for b in batches})
    fns.update({("point", name): point_call(options) for name, _, _, options in points})
    measured = _measure_quietly(fns, runs=runs, warmup=warmup, threshold=noise_threshold, progress=progress)

    graphs = {
        name: GraphRow(name, graph.macs, {b: measured[("graph", name, b)] for b in batches})
        for name, graph in manifest.graphs.items()
    }
    preprocess, static = measured[("preprocess",)], measured[("static",)]
    overhead = static.median_ms - preprocess.median_ms - graphs[manifest.dispatch.reference].batches[1].median_ms
    per_call = _dispatch_ms_per_call(session, singles[0], points, runs=runs, warmup=warmup)
    rows = []
    for name, kind, value, options in points:
        macs = []
        with _counting_calls(session) as counts:
            for single in singles:
                macs.append(float(session.run(single, **options).macs[0]))
        calls = {graph: count / len(singles) for graph, count in sorted(counts.items())}
        predicted = _predicted_ms(preprocess.median_ms, overhead, per_call, graphs, calls)
        rows.append(PointRow(name, kind, value, float(np.mean(macs)), calls, measured[("point", name)], predicted))

    return LatencyTable(
        bundle=str(session.bundle), manifest_sha256=sha256_of(session.bundle / MANIFEST_FILE),
        family=manifest.family, device=device.name, backend=session.backend.name, backend_detail=detail,
        threads=device.threads, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=command,
        warmup=warmup, runs=runs, noise_threshold=noise_threshold, preprocess=preprocess,
        reference=manifest.dispatch.reference, static=static,
        session_overhead_ms=overhead, dispatch_ms_per_call=per_call, graphs=graphs, points=rows,
        fit=fit_latency(graphs, rows),
        pipeline=None if images is None else _pipeline(session, singles, runs=max(3, runs // 10)),
    )


def predict_run(session: Session, table: LatencyTable, image: np.ndarray, **options) -> float:
    """The table's prediction, in ms, for `session.run(image, **options)` on one image: the graph calls it
    makes (counted on one run), each at its batch-1 median, plus preprocessing, the session's own cost and the
    dispatch of every further call."""
    with _counting_calls(session) as counts:
        session.run(image, **options)
    return _predicted_ms(table.preprocess.median_ms, table.session_overhead_ms, table.dispatch_ms_per_call,
                         table.graphs, counts)


def _predicted_ms(preprocess_ms: float, overhead_ms: float, per_call_ms: float, graphs: dict[str, GraphRow],
                  calls: dict) -> float:
    """Preprocessing, the session's cost of a one-call run (the static model's), the dispatch cost of every
    further call, and each call at its graph's batch-1 median."""
    total = sum(calls.values())
    return (preprocess_ms + overhead_ms + per_call_ms * max(total - 1, 0)
            + sum(n * graphs[g].batches[1].median_ms for g, n in calls.items()))


def _dispatch_ms_per_call(
    session: Session, image: np.ndarray, points: list[tuple[str, str, float | None, dict]], *, runs: int, warmup: int,
) -> float:
    """What each graph call beyond the first adds to `Session.run` outside the graphs: the rule's dispatch.

    Every point and the static model run with their graph calls answered at
    once, from a recording of the same run, so that only preprocessing, the
    session and the rule's own work between calls remain. Each point's
    replayed time above the static model's (one call) is divided by its
    extra calls. The graphs themselves are measured apart, so nothing here
    is fitted to the points the table predicts.
    """
    options = {("static",): {"static": True}} | {("point", name): o for name, _, _, o in points}
    recorded: dict[Hashable, list] = {key: [] for key in options}
    answers: Iterator = iter(())

    def replay(key: Hashable) -> Callable[[], object]:
        def run() -> object:
            nonlocal answers
            answers = iter(recorded[key])
            return session.run(image, **options[key])
        return run

    original = dict(session.graphs)
    try:
        for key, extra in options.items():
            session.graphs.update({name: _recording(run, recorded[key]) for name, run in original.items()})
            session.run(image, **extra)
        session.graphs.update(dict.fromkeys(original, lambda inputs: next(answers)))
        times = measure({key: replay(key) for key in options}, runs=runs, warmup=warmup)
    finally:
        session.graphs.update(original)
    static = times[("static",)].median_ms
    extra = [(times[key].median_ms - static, len(calls) - 1) for key, calls in recorded.items() if len(calls) > 1]
    return max(0.0, sum(ms for ms, _ in extra) / sum(n for _, n in extra)) if extra else 0.0


def _recording(run: Callable, outputs: list) -> Callable:
    """`run`, keeping each call's outputs in `outputs`."""
    def call(inputs):
        outputs.append(result := run(inputs))
        return result
    return call


def _pipeline(session: Session, singles: list[np.ndarray], *, runs: int) -> dict:
    """The whole pipeline over the image set, one image per call: wall time, and the shares of preprocessing and selector.

    Shares come from the session's own per-call timings (RunResult.timings).
    """
    selector = getattr(session.manifest.dispatch, "selector", None)
    walls, preprocess, selecting = [], [], []
    for _ in range(runs):
        for single in singles:
            start = time.perf_counter()
            timings = session.run(single).timings
            walls.append(time.perf_counter() - start)
            preprocess.append(timings["preprocess"])
            selecting.append(timings.get(selector, 0.0))
    total = Timing.of(np.array(walls))
    return {
        "images": len(singles), "rounds": runs, "total": asdict(_latency(total, 0, float("inf"))),
        "preprocess_share": float(np.median(preprocess)) * 1e3 / total.median_ms,
        "selector": selector, "selector_share": float(np.median(selecting)) * 1e3 / total.median_ms,
    }
