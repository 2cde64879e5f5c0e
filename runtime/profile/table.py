"""Measure a bundle's latency table on this device: every graph across batches, and every operating point.

An operating point is what a user can ask `Session.run` for: a path every
image takes (DRNet's resolutions, BlockDrop's cached paths, Resizable's
configurations) or URNet's compute scale S. Everything is timed in one
interleaved measurement (runtime.profile.timing.measure), each call on a new input;
rows whose spread shows a noisy machine are measured again, and flagged if
they stay noisy. The table's format is runtime/format/latency_table.py.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from datetime import datetime, timezone

import numpy as np

from runtime.format.devices import Device
from runtime.format.files import sha256_of
from runtime.format.latency_table import (
    GraphRow, Latency, LatencyTable, Pipeline, PointRow, fit_latency, predicted_ms, walk_paths,
)
from runtime.format.manifest import MANIFEST_FILE, Manifest
from runtime.preprocess import prepare
from runtime.profile.timing import Timing, measure
from runtime.rules import OperatingPoint, graphs_in_role
from runtime.session import Session, check_finite

__all__ = [
    "POOL", "REMEASURES", "points_to_measure", "walk_points", "graph_inputs", "measure_table", "predict_run", "recording",
]

POOL = 16  # distinct inputs per callable, cycled, so that no call replays the one before
REMEASURES = 2  # how many times a noisy row is measured again before it is flagged


def points_to_measure(manifest: Manifest, scales: Sequence[float] | None = None) -> tuple[OperatingPoint, ...]:
    """The bundle's operating points; for a bundle that takes a compute scale, `scales` replaces its S sweep."""
    if scales is None:
        return manifest.dispatch.operating_points(manifest.graphs)
    if not manifest.rule.takes_scale:
        raise ValueError(f"a {manifest.family} bundle takes no compute scale; its points are its paths")
    if not scales or any(not 0 <= s <= 1 for s in scales):
        raise ValueError(f"scales must be values of S in [0, 1], got {list(scales)}")
    return tuple(OperatingPoint(f"S={s:g}", "scale", float(s)) for s in scales)


def walk_points(manifest: Manifest) -> tuple[OperatingPoint, ...]:
    """For a rule with blocks, the forced paths a block walk's latency is read from (`walk_paths`; the trainer's
    latency cost). Timed through `Session.run`, they cost what the runtime runs for one image, whether a graph
    call per block or one conditional graph (URNet's `If`), which no sum of graph rows predicts; none for rules
    without blocks."""
    walk = manifest.dispatch.block_walk()
    return () if walk is None else tuple(OperatingPoint(path, "path") for path in walk_paths(len(walk.starts)))


@contextlib.contextmanager
def _counting_calls(session: Session) -> Iterator[Counter]:
    """Count the session's graph calls while inside."""
    counts: Counter = Counter()

    def count(name: str, inputs, run) -> list[np.ndarray]:
        counts[name] += 1
        return run(inputs)

    with session.hooked(count):
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
    images: np.ndarray | None = None, scales: Sequence[float] | None = None, noise_threshold: float = 0.1,
    command: str = "", progress: Callable[[], object] | None = None, walk: bool = False,
) -> LatencyTable:
    """The latency table of `session`'s bundle on `device`: the one measurement the profiler's report is a view of.

    `images`, uint8 NHWC, feed the operating points and the pipeline (its
    real selector decisions); without them, random uint8 images at the
    bundle's resolution feed the points, and there is no pipeline row.
    `scales` replaces URNet's S sweep. `walk` adds the block walk's forced
    paths (`walk_points`), what training against the table reads. `progress`
    is called after every round of interleaved calls (runtime.profile.timing.measure).
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
            raise ValueError(f"images must be a 4-D batch of uint8 NHWC, (N, H, W, 3), got {images.dtype} of shape "
                             f"{images.shape}")
        pool = images
    singles = [pool[i : i + 1] for i in range(len(pool))]
    next_single = itertools.cycle(singles).__next__
    points = points_to_measure(manifest, scales)
    if walk:
        offered = {point.name for point in points}
        points += tuple(point for point in walk_points(manifest) if point.name not in offered)

    def graph_call(name: str, batch: int) -> Callable[[], object]:
        """The graph alone, with the check every Session.run call makes of its outputs."""
        run = session.graphs[name]
        inputs = itertools.cycle([graph_inputs(manifest.graphs[name], batch, rng) for _ in range(POOL)]).__next__
        return lambda: check_finite(session.bundle, name, run(inputs()))

    def point_call(point: OperatingPoint) -> Callable[[], object]:
        return lambda: session.run(next_single(), **point.options)

    fns: dict[Hashable, Callable[[], object]] = {
        ("preprocess",): lambda: prepare(next_single(), manifest.preprocessing),
        ("static",): lambda: session.run(next_single(), static=True),
    }
    fns.update({("graph", name, b): graph_call(name, b) for name in manifest.graphs for b in batches})
    fns.update({("point", point.name): point_call(point) for point in points})
    measured = _measure_quietly(fns, runs=runs, warmup=warmup, threshold=noise_threshold, progress=progress)

    graphs = {
        name: GraphRow(name, graph.macs, {b: measured[("graph", name, b)] for b in batches})
        for name, graph in manifest.graphs.items()
    }
    preprocess, static = measured[("preprocess",)], measured[("static",)]
    # A difference of medians: on a busy machine it can come out below zero, which the runtime cannot cost, and a
    # negative prediction would make a table its own reader refuses.
    reference = graphs[manifest.dispatch.reference].batches[1]
    overhead = max(0.0, static.median_ms - preprocess.median_ms - reference.median_ms)
    per_call = _dispatch_ms_per_call(session, singles[0], points, runs=runs, warmup=warmup)
    rows = []
    for point in points:
        macs = []
        with _counting_calls(session) as counts:
            for single in singles:
                macs.append(float(session.run(single, **point.options).macs[0]))
        calls = {graph: count / len(singles) for graph, count in sorted(counts.items())}
        predicted = predicted_ms(preprocess.median_ms, overhead, per_call, graphs, calls)
        rows.append(PointRow(point.name, point.kind, point.value, float(np.mean(macs)), calls,
                             measured[("point", point.name)], predicted))

    return LatencyTable(
        bundle=str(session.bundle), manifest_sha256=sha256_of(session.bundle / MANIFEST_FILE),
        family=manifest.family, target=manifest.target, device=device.name, backend=session.backend.name,
        backend_detail=detail, threads=device.threads, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=command, warmup=warmup, runs=runs, noise_threshold=noise_threshold, preprocess=preprocess,
        reference=manifest.dispatch.reference, static=static,
        session_overhead_ms=overhead, dispatch_ms_per_call=per_call, graphs=graphs, points=rows,
        fit=fit_latency(graphs, rows),
        pipeline=None if images is None else _pipeline(session, pool, runs=max(3, runs // 10)),
        recipe=manifest.producer.get("recipe"),
    )


def predict_run(session: Session, table: LatencyTable, image: np.ndarray, **options) -> float:
    """The table's prediction, in ms, for `session.run(image, **options)` on one image: the graph calls it
    makes (counted on one run), each at its batch-1 median, plus preprocessing, the session's own cost and the
    dispatch of every further call."""
    with _counting_calls(session) as counts:
        session.run(image, **options)
    return table.predicted_ms(counts)


def _dispatch_ms_per_call(
    session: Session, image: np.ndarray, points: Sequence[OperatingPoint], *, runs: int, warmup: int,
) -> float:
    """What each graph call beyond the first adds to `Session.run` outside the graphs: the rule's dispatch.

    Every point and the static model run with their graph calls answered at
    once, from a recording of the same run, so that only preprocessing, the
    session and the rule's own work between calls remain. Each point's
    replayed time above the static model's (one call) is divided by its
    extra calls. The graphs themselves are measured apart, so nothing here
    is fitted to the points the table predicts.
    """
    options = {("static",): {"static": True}} | {("point", p.name): p.options for p in points}
    recorded: dict[Hashable, list] = {}
    for key, extra in options.items():
        with recording(session) as calls:
            session.run(image, **extra)
        recorded[key] = [outputs for _, _, outputs in calls]
    answers: Iterator = iter(())

    def replay(key: Hashable) -> Callable[[], object]:
        def run() -> object:
            nonlocal answers
            answers = iter(recorded[key])
            return session.run(image, **options[key])
        return run

    with session.hooked(lambda name, inputs, run: next(answers)):
        times = measure({key: replay(key) for key in options}, runs=runs, warmup=warmup)
    static = times[("static",)].median_ms
    extra = [(times[key].median_ms - static, len(calls) - 1) for key, calls in recorded.items() if len(calls) > 1]
    return max(0.0, sum(ms for ms, _ in extra) / sum(n for _, n in extra)) if extra else 0.0


@contextlib.contextmanager
def recording(session: Session) -> Iterator[list[tuple[str, Sequence[np.ndarray], list[np.ndarray]]]]:
    """Every graph call the session makes while inside, in order: (graph, inputs, outputs)."""
    calls: list[tuple[str, Sequence[np.ndarray], list[np.ndarray]]] = []

    def record(name: str, inputs, run) -> list[np.ndarray]:
        outputs = run(inputs)
        calls.append((name, inputs, outputs))
        return outputs

    with session.hooked(record):
        yield calls


def _pipeline(session: Session, images: np.ndarray, *, runs: int) -> Pipeline:
    """The whole pipeline over the image set against the static full model over the same images.

    One image per call (the latency a user waits for): its distribution, and
    the shares of preprocessing and selector from the session's own per-call
    timings (RunResult.timings). Then, interleaved, the set one image per
    call and as one batch (throughput), dynamic and static, all through
    `Session.run`.
    """
    singles = [images[i : i + 1] for i in range(len(images))]
    selector = next(iter(graphs_in_role(session.manifest.dispatch, "selector")), None)
    walls, preprocess, selecting = [], [], []
    for _ in range(runs):
        for single in singles:
            start = time.perf_counter()
            timings = session.run(single).timings
            walls.append(time.perf_counter() - start)
            preprocess.append(timings["preprocess"])
            selecting.append(timings.get(selector, 0.0))
    total = Timing.of(np.array(walls))

    def one_by_one(**options):
        return lambda: [session.run(x, **options) for x in singles]

    times = measure(
        {"dynamic": one_by_one(), "static": one_by_one(static=True),
         "batched": lambda: session.run(images), "batched_static": lambda: session.run(images, static=True)},
        runs=runs, warmup=1,
    )
    per_image = {name: t.median_ms / len(images) for name, t in times.items()}
    result = session.run(images)
    return Pipeline(
        images=len(images), rounds=runs, total=_latency(total, 0, float("inf")),
        preprocess_share=float(np.median(preprocess)) * 1e3 / total.median_ms,
        selector=selector, selector_share=float(np.median(selecting)) * 1e3 / total.median_ms,
        dynamic_ms=per_image["dynamic"], static_ms=per_image["static"], batched_ms=per_image["batched"],
        batched_static_ms=per_image["batched_static"], mean_macs=float(result.macs.mean()),
        histogram=dict(Counter(result.paths).most_common()),
    )
