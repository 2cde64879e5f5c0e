"""A device's latency table for one bundle: every graph and operating point, measured on that device.

`python -m runtime.profile table` writes it (runtime/profile/table.py);
the runtime reads it. The format is JSON, documented in
docs/latency_table.md and validated field by field on read, with errors that
name the file and the field. Torch-free, like the rest of the format layer.

Two checks travel with the measurements:

- **prediction:** each operating point's latency predicted as the sum of the
  graph calls it makes (batch 1, measured alone), plus preprocessing, plus the
  session's own cost per run (calibrated once: the static full model through
  `Session.run` minus its graph alone and preprocessing), plus the rule's
  dispatch cost per further call (measured with the graph calls replayed),
  against its latency measured whole through `Session.run`. Summing
  per-layer or per-graph means is what latency tables such as Once-for-All's
  assume; the error says how far that holds through the runtime's dispatch.
- **fit:** latency ~ a * GMACs + b * graph calls + c over every graph at
  batch 1 and every operating point, with its R^2: how much of the latency
  MACs and calls explain on this device.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.format.block_names import block_graph, skip_graph
from runtime.format.files import atomic_write
from runtime.format.fields import FieldReader, FormatError

__all__ = [
    "LATENCY_TABLE_FORMAT", "LATENCY_TABLE_VERSION", "LatencyTableError", "Latency", "GraphRow", "PointRow", "Fit",
    "Pipeline", "LatencyTable", "fit_latency", "predicted_ms", "walk_paths", "read_latency_table",
    "write_latency_table",
]

LATENCY_TABLE_FORMAT = "adaptive-edge-latency-table"
# 2 adds dispatch_ms_per_call (a version 1 table is read with 0, as its predictions were made); 3 adds target and the
# pipeline's comparison with the static model (a version 2 pipeline is read without it); 4 adds the recipe a cost
# table was measured for (python -m runtime.profile costs), which the trainer checks.
LATENCY_TABLE_VERSION = 4
PREDICTION_TOLERANCE = 0.10  # a prediction within 10% of the measured latency counts as right
PAYS = 0.5  # a candidate pays on a device when it keeps at least this share of its MACs saving as latency


class LatencyTableError(FormatError):
    """A latency table that does not follow docs/latency_table.md."""


def walk_paths(count: int) -> tuple[str, ...]:
    """The forced paths that give a walk over `count` blocks its latency, linear in the blocks it runs: every
    block dropped, then each block alone (`python -m runtime.profile costs` measures them as points)."""
    return ("0" * count, *("0" * k + "1" + "0" * (count - k - 1) for k in range(count)))


@dataclass(frozen=True)
class Latency:
    """One measured row: statistics over `runs` timed calls, each on a new input."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mad_ms: float
    runs: int
    noisy: bool = False  # its MAD / median stayed above the table's threshold after re-measuring
    remeasured: int = 0  # how many times it was measured again for being noisy


@dataclass(frozen=True)
class GraphRow:
    name: str
    macs: int  # per sample
    batches: Mapping[int, Latency]  # batch size -> latency of one call on that batch


@dataclass(frozen=True)
class PointRow:
    """One operating point: a path every image takes, or URNet's compute scale S."""

    name: str
    kind: str  # "path" or "scale"
    value: float | None  # S for a scale point
    macs: float  # mean per image, selector included
    calls: Mapping[str, float]  # graph -> mean calls per image
    latency: Latency  # measured whole, through Session.run, batch 1
    predicted_ms: float  # preprocessing + session overhead + dispatch per further call + its calls' batch-1 medians

    @property
    def error(self) -> float:
        """Relative error of the prediction against the measured median."""
        return (self.predicted_ms - self.latency.median_ms) / self.latency.median_ms


@dataclass(frozen=True)
class Fit:
    ms_per_gmac: float
    ms_per_call: float
    constant_ms: float
    r2: float
    points: int


@dataclass(frozen=True)
class Pipeline:
    """The whole pipeline over a given image set, with the selector deciding, against the static full model.

    The static and batched figures are from version 3; a version 2 table has none.
    """

    images: int
    rounds: int
    total: Latency  # one image per call, per image
    preprocess_share: float  # of `total`'s median
    selector: str | None  # the selector graph, where the rule has one
    selector_share: float
    dynamic_ms: float | None = None  # per image, the set one image per call, timed beside `static_ms`
    static_ms: float | None = None  # the static full model likewise
    batched_ms: float | None = None  # per image, the set as one batch
    batched_static_ms: float | None = None
    mean_macs: float | None = None  # per image, selector included
    histogram: Mapping[str, int] | None = None  # images per path

    @property
    def speedup(self) -> float | None:
        """The static full model's time over the dynamic one's, one image per call."""
        return None if self.dynamic_ms is None else self.static_ms / self.dynamic_ms


@dataclass(frozen=True)
class LatencyTable:
    bundle: str
    manifest_sha256: str  # the bundle the table describes: a table of another bundle is refused
    family: str
    device: str
    backend: str
    backend_detail: str  # what actually ran: library version, providers, threads
    threads: int | None
    created: str  # UTC ISO 8601
    command: str
    warmup: int
    runs: int
    noise_threshold: float  # MAD / median above which a row is re-measured, then flagged
    preprocess: Latency  # a uint8 image to the normalized batch, batch 1
    reference: str  # the static full model's graph
    static: Latency  # Session.run(static=True): the static full model through the public API
    session_overhead_ms: float  # static - preprocess - the reference graph alone: the runtime's own cost per run
    dispatch_ms_per_call: float  # what each graph call beyond the first adds outside the graphs (replayed calls)
    graphs: Mapping[str, GraphRow]
    points: Sequence[PointRow]
    fit: Fit | None  # None with fewer operating points than parameters
    pipeline: Pipeline | None = None  # over a given image set
    target: str | None = None  # the bundle's target; None in tables before version 3
    recipe: str | None = None  # the training recipe a cost table was measured for; None for a trained bundle's table

    def predicted_ms(self, calls: Mapping[str, float]) -> float:
        """The table's prediction for a run making `calls` (graph -> calls per image): what the trainer's
        latency cost and the profiler's per-image predictions both use."""
        return predicted_ms(self.preprocess.median_ms, self.session_overhead_ms, self.dispatch_ms_per_call,
                            self.graphs, calls)

    def kept_saving(self, point: PointRow) -> float | None:
        """The share of `point`'s MACs saving against the full model that it keeps as latency against the static
        model (1: latency falls as MACs do; below PAYS it does not pay on this device); None where it saves no MACs."""
        saved_macs = 1 - point.macs / self.graphs[self.reference].macs
        if saved_macs <= 0:
            return None
        return (1 - point.latency.median_ms / self.static.median_ms) / saved_macs

    def paying_points(self) -> list[str]:
        """The operating points worth running on this device: those that keep at least PAYS of their MACs
        saving as latency, and those that save no MACs (the full model's cost)."""
        return [p.name for p in self.points if (kept := self.kept_saving(p)) is None or kept >= PAYS]

    @property
    def block_count(self) -> int:
        """The blocks of a block walk (BlockDrop, URNet): the exporter's graphs "block0", "block1", ... up to the
        first missing one (a cost table has every block; a BlockDrop plan may leave one out); 0 without blocks."""
        return next(k for k in itertools.count() if block_graph(k) not in self.graphs)

    def walk_ms(self, count: int) -> tuple[float, tuple[float, ...]] | None:
        """A walk over `count` blocks from its measured forced paths (`walk_paths`): the latency with every block
        dropped, and what running each block adds to it. None where the table lacks any of them."""
        measured = {p.name: p.latency.median_ms for p in self.points if p.kind == "path"}
        paths = walk_paths(count)
        if any(path not in measured for path in paths):
            return None
        base = measured[paths[0]]
        # A block cheaper than the noise can measure below the base: it saves nothing, and costs nothing.
        return base, tuple(max(0.0, measured[path] - base) for path in paths[1:])

    def kept_block_saving(self, block: int) -> float | None:
        """Like `kept_saving`, for leaving one block of a block walk out (BlockDrop, URNet: the exporter's graphs
        "block{k}" and, where a dropped block still runs something, "skip{k}"): the latency it saves against the
        static model over the MACs it saves against the full model. The latency is read from the walk's forced
        paths where the table measured them (`walk_ms`), else from the graph rows: without a skip graph the
        block's call is saved too. None where the table has no such block, or its skip saves no MACs."""
        run, skip = self.graphs.get(block_graph(block)), self.graphs.get(skip_graph(block))
        if run is None:
            return None
        skipped_ms, skipped_macs = (skip.batches[1].median_ms, skip.macs) if skip else (-self.dispatch_ms_per_call, 0)
        saved_macs = (run.macs - skipped_macs) / self.graphs[self.reference].macs
        if saved_macs <= 0:
            return None
        walk = self.walk_ms(self.block_count)
        saved_ms = walk[1][block] if walk else run.batches[1].median_ms - skipped_ms
        return saved_ms / self.static.median_ms / saved_macs

    @property
    def within_tolerance(self) -> float:
        """The share of operating points predicted within PREDICTION_TOLERANCE."""
        return float(np.mean([abs(p.error) <= PREDICTION_TOLERANCE for p in self.points])) if self.points else 0.0

    @property
    def noisy_rows(self) -> list[str]:
        rows = [f"graph {g.name} batch {b}" for g in self.graphs.values() for b, t in g.batches.items() if t.noisy]
        rows += [f"point {p.name}" for p in self.points if p.latency.noisy]
        return rows + [name for name, t in (("preprocess", self.preprocess), ("static", self.static)) if t.noisy]


def predicted_ms(preprocess_ms: float, overhead_ms: float, per_call_ms: float, graphs: Mapping[str, GraphRow],
                 calls: Mapping[str, float]) -> float:
    """Preprocessing, the session's cost of a one-call run (the static model's), the dispatch cost of every
    further call, and each call at its graph's batch-1 median."""
    total = sum(calls.values())
    return (preprocess_ms + overhead_ms + per_call_ms * max(total - 1, 0)
            + sum(n * graphs[g].batches[1].median_ms for g, n in calls.items()))


def fit_latency(graphs: Mapping[str, GraphRow], points: Sequence[PointRow]) -> Fit | None:
    """Least squares of latency_ms = a * GMACs + b * calls + c over every graph at batch 1 (one call) and every
    operating point, and its R^2; None with no more samples than parameters."""
    samples = [(g.macs, 1.0, g.batches[1].median_ms) for g in graphs.values()]
    samples += [(p.macs, sum(p.calls.values()), p.latency.median_ms) for p in points]
    if len(samples) <= 3:
        return None
    design = np.array([[macs / 1e9, calls, 1.0] for macs, calls, _ in samples])
    measured = np.array([ms for *_, ms in samples])
    coefficients, *_ = np.linalg.lstsq(design, measured, rcond=None)
    residual = measured - design @ coefficients
    total = float(((measured - measured.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    a, b, c = (float(v) for v in coefficients)
    return Fit(a, b, c, r2, len(samples))


def write_latency_table(path: str | Path, table: LatencyTable) -> None:
    data = {"format": LATENCY_TABLE_FORMAT, "version": LATENCY_TABLE_VERSION, **asdict(table)}
    for row in data["graphs"].values():
        row["batches"] = {str(batch): latency for batch, latency in row["batches"].items()}
    atomic_write(Path(path), lambda temporary: Path(temporary).write_text(json.dumps(data, indent=1) + "\n"))


VERSION_1_FIELDS = frozenset({
    "bundle", "manifest_sha256", "family", "device", "backend", "backend_detail", "threads", "created", "command",
    "warmup", "runs", "noise_threshold", "preprocess", "reference", "static", "session_overhead_ms", "graphs", "points",
    "fit", "pipeline",
})
ADDED_IN = {2: frozenset({"dispatch_ms_per_call"}), 3: frozenset({"target"}), 4: frozenset({"recipe"})}
PIPELINE_FIELDS = frozenset({"images", "rounds", "total", "preprocess_share", "selector", "selector_share"})
PIPELINE_ADDED_IN_3 = frozenset({"dynamic_ms", "static_ms", "batched_ms", "batched_static_ms", "mean_macs", "histogram"})


def read_latency_table(path: str | Path) -> LatencyTable:
    """Read and validate a table; LatencyTableError naming the file and the field on any problem."""
    path = Path(path)
    r = FieldReader(path, LatencyTableError)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise r.fail("table", "no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise r.fail("table", f"not valid JSON: {error}") from None
    top = r.fields(data, "table", {"format", "version"}, VERSION_1_FIELDS.union(*ADDED_IN.values()))
    if top["format"] != LATENCY_TABLE_FORMAT:
        raise r.fail("format", f"{top['format']!r} is not {LATENCY_TABLE_FORMAT!r}")
    version = top["version"]
    if version not in range(1, LATENCY_TABLE_VERSION + 1):
        raise r.fail("version", f"unknown version {version!r}; this runtime reads 1 to {LATENCY_TABLE_VERSION}")
    r.fields(top, "table", {"format", "version"} | VERSION_1_FIELDS.union(*(ADDED_IN[v] for v in range(2, version + 1))))
    graphs = {}
    for name, row in r.typed(top["graphs"], dict, "graphs").items():
        where = f"graphs[{name!r}]"
        g = r.fields(row, where, {"name", "macs", "batches"})
        batches = {}
        for batch, latency in r.typed(g["batches"], dict, f"{where}.batches").items():
            if not batch.isdigit() or int(batch) < 1:
                raise r.fail(f"{where}.batches", f"batch sizes are positive integers, got {batch!r}")
            batches[int(batch)] = _latency(r, latency, f"{where}.batches[{batch!r}]")
        if 1 not in batches:
            raise r.fail(f"{where}.batches", "needs batch 1, which predictions use")
        graphs[name] = GraphRow(r.text(g["name"], f"{where}.name"), r.count(g["macs"], f"{where}.macs"), batches)
    points = []
    for i, row in enumerate(r.typed(top["points"], list, "points")):
        where = f"points[{i}]"
        p = r.fields(row, where, {"name", "kind", "value", "macs", "calls", "latency", "predicted_ms"})
        calls = r.typed(p["calls"], dict, f"{where}.calls")
        for graph, count in calls.items():
            r.choice(graph, graphs, f"{where}.calls")
            _nonnegative(r, count, f"{where}.calls[{graph!r}]")
        points.append(PointRow(
            r.text(p["name"], f"{where}.name"), r.choice(p["kind"], ("path", "scale"), f"{where}.kind"),
            None if p["value"] is None else r.number(p["value"], f"{where}.value"),
            _nonnegative(r, p["macs"], f"{where}.macs"), {g: float(c) for g, c in calls.items()},
            _latency(r, p["latency"], f"{where}.latency"), _nonnegative(r, p["predicted_ms"], f"{where}.predicted_ms"),
        ))
    fit = None
    if top["fit"] is not None:
        f = r.fields(top["fit"], "fit", {"ms_per_gmac", "ms_per_call", "constant_ms", "r2", "points"})
        fit = Fit(*(r.number(f[k], f"fit.{k}") for k in ("ms_per_gmac", "ms_per_call", "constant_ms", "r2")),
                  r.count(f["points"], "fit.points", 4))
    return LatencyTable(
        bundle=r.text(top["bundle"], "bundle"), manifest_sha256=r.text(top["manifest_sha256"], "manifest_sha256"),
        family=r.text(top["family"], "family"),
        target=r.text(top["target"], "target") if version >= 3 else None, device=r.text(top["device"], "device"),
        backend=r.text(top["backend"], "backend"), backend_detail=r.text(top["backend_detail"], "backend_detail"),
        threads=None if top["threads"] is None else r.count(top["threads"], "threads", 1),
        created=r.text(top["created"], "created"), command=r.typed(top["command"], str, "command"),
        warmup=r.count(top["warmup"], "warmup"), runs=r.count(top["runs"], "runs", 1),
        noise_threshold=_nonnegative(r, top["noise_threshold"], "noise_threshold"),
        preprocess=_latency(r, top["preprocess"], "preprocess"), reference=r.choice(top["reference"], graphs, "reference"),
        static=_latency(r, top["static"], "static"),
        session_overhead_ms=r.number(top["session_overhead_ms"], "session_overhead_ms"),
        dispatch_ms_per_call=_nonnegative(r, top.get("dispatch_ms_per_call", 0.0), "dispatch_ms_per_call"),
        graphs=graphs, points=points, fit=fit,
        pipeline=None if top["pipeline"] is None else _pipeline(r, top["pipeline"], version),
        recipe=None if version < 4 or top["recipe"] is None else r.text(top["recipe"], "recipe"),
    )


def _pipeline(r: FieldReader, data: Any, version: int) -> Pipeline:
    p = r.fields(data, "pipeline", set(PIPELINE_FIELDS | (PIPELINE_ADDED_IN_3 if version >= 3 else frozenset())))
    share = lambda key: _nonnegative(r, p[key], f"pipeline.{key}")  # noqa: E731
    added = {}
    if version >= 3:
        added = {key: _nonnegative(r, p[key], f"pipeline.{key}")
                 for key in ("dynamic_ms", "static_ms", "batched_ms", "batched_static_ms", "mean_macs")}
        histogram = r.typed(p["histogram"], dict, "pipeline.histogram")
        added["histogram"] = {k: r.count(v, f"pipeline.histogram[{k!r}]") for k, v in histogram.items()}
    return Pipeline(
        images=r.count(p["images"], "pipeline.images", 1), rounds=r.count(p["rounds"], "pipeline.rounds", 1),
        total=_latency(r, p["total"], "pipeline.total"), preprocess_share=share("preprocess_share"),
        selector=None if p["selector"] is None else r.text(p["selector"], "pipeline.selector"),
        selector_share=share("selector_share"), **added,
    )


def _nonnegative(r: FieldReader, value: Any, where: str) -> float:
    number = r.number(value, where)
    if not number >= 0:  # NaN fails too
        raise r.fail(where, f"must be a non-negative number, got {value!r}")
    return number


def _latency(r: FieldReader, data: Any, where: str) -> Latency:
    t = r.fields(data, where, {"median_ms", "p90_ms", "p99_ms", "mad_ms", "runs", "noisy", "remeasured"})
    median, p90, p99, mad = (_nonnegative(r, t[k], f"{where}.{k}") for k in ("median_ms", "p90_ms", "p99_ms", "mad_ms"))
    if not median <= p90 <= p99:
        raise r.fail(where, f"needs median <= p90 <= p99, got {median}, {p90}, {p99}")
    return Latency(median, p90, p99, mad, r.count(t["runs"], f"{where}.runs", 1), r.flag(t["noisy"], f"{where}.noisy"),
                   r.count(t["remeasured"], f"{where}.remeasured"))
