"""A loaded bundle: run the selector once on the batch, then each group of samples on its path.

Written once for every backend and every rule: the rule's dispatcher decides
which graphs run on which samples, and this module calls them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.backends import Backend, GraphRunner, create_backend
from runtime.format.bundle import open_bundle
from runtime.format.devices import Device
from runtime.format.fields import BundleError
from runtime.format.files import sha256_of
from runtime.format.latency_table import LatencyTable, read_latency_table
from runtime.format.manifest import MANIFEST_FILE, Manifest
from runtime.format.targets import TARGETS
from runtime.preprocess import prepare
from runtime.rules import Request
from runtime.serving.budgets import Allowance, allowance
from runtime.serving.costs import latency_key

__all__ = ["RunResult", "Session", "GraphHook", "NonFiniteOutput", "check_finite", "load"]

# Stands between the session and one graph call: (graph name, inputs, the backend's runner) -> the call's outputs.
# A hook that observes calls `run(inputs)` and returns what it gives; one that replays returns recorded outputs.
GraphHook = Callable[[str, Sequence[np.ndarray], GraphRunner], list[np.ndarray]]


@dataclass(repr=False)
class RunResult:
    logits: np.ndarray  # (N, classes) float32
    paths: list[str]  # per sample, the path it took
    macs: np.ndarray  # (N,) int64, selector included
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "preprocess", then per graph, summed over calls

    def summary(self) -> str:
        """The run at a glance: images per path, MACs and time."""
        histogram = ", ".join(f"{path}: {count}" for path, count in Counter(self.paths).most_common(6))
        more = f", ... ({len(set(self.paths))} paths)" if len(set(self.paths)) > 6 else ""
        return (f"{len(self.paths)} images; paths {{{histogram}{more}}}; {self.macs.mean() / 1e6:.3f} MMACs/image; "
                f"{sum(self.timings.values()) * 1e3:.3f} ms")

    def __repr__(self) -> str:
        return f"RunResult({self.summary()})"


class NonFiniteOutput(BundleError):
    """A graph answered NaN or inf: never a valid answer, whatever the bundle's sha256 says of its files."""


def check_finite(bundle: Path, graph: str, outputs: Sequence[np.ndarray]) -> None:
    """NonFiniteOutput naming the bundle, the graph and the first sample of its call with a NaN or inf output.

    One vectorized `isfinite(...).all()` pass per output, no float64 copy; the
    rows are looked at only on failure. What it costs per graph call:
    benchmarks/results/finite_check.md.
    """
    for index, output in enumerate(outputs):
        if not np.isfinite(output).all():
            finite = np.isfinite(output.reshape(len(output), -1)).all(axis=1)
            sample = int(np.argmin(finite))
            raise NonFiniteOutput(
                f"{bundle}: graph {graph!r} answered NaN or inf in output {index} for sample {sample} of the "
                f"{len(output)} it ran on ({int((~finite).sum())} non-finite); its weights are not what was exported"
            )


class GraphCalls:
    """Calls graphs by name on batches of any size: in chunks of at most `max_batch`, timing each graph, and
    refusing outputs that are not finite. Calls hold the session's `lock`: not every backend's runner is
    re-entrant (TensorRT's device buffers, an ExecuTorch method), so one session runs one graph at a time."""

    __slots__ = ("graphs", "max_batch", "timings", "bundle", "lock")

    def __init__(
        self, graphs: dict[str, GraphRunner], max_batch: int, timings: dict[str, float], bundle: Path,
        lock: threading.Lock | None = None,
    ) -> None:
        self.graphs, self.max_batch, self.timings, self.bundle = graphs, max_batch, timings, bundle
        self.lock = lock or threading.Lock()  # a session's own, shared by its calls; else this caller's alone

    def __call__(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        run, size = self.graphs[name], self.max_batch
        start = time.perf_counter()
        with self.lock:
            if len(inputs[0]) <= size:
                outputs = run(inputs)
            else:
                chunks = [run([x[i : i + size] for x in inputs]) for i in range(0, len(inputs[0]), size)]
                outputs = [np.concatenate(parts) for parts in zip(*chunks)]
        check_finite(self.bundle, name, outputs)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return outputs


class Session:
    """A bundle on one backend. `run` may be called from several threads at once: preprocessing and dispatch run
    concurrently, graph calls one at a time (GraphCalls), and every result is the one a lone call gives
    (tests/test_serving.py). A `hooked` session routes every thread's calls through its hook."""

    ALLOWANCES = 64  # budgets whose allowance is remembered: a serving policy asks for a few levels, again and again

    def __init__(
        self, bundle: Path, manifest: Manifest, backend: Backend, device: str | None = None,
        table: LatencyTable | None = None,
    ) -> None:
        self.bundle = bundle
        self.manifest = manifest
        self.backend = backend
        self.device = device or manifest.producer.get("device")  # where latency budgets are looked up
        self.table = table  # this device's latency table: what budgets in ms are measured against
        self.graphs = {name: backend.load(bundle, manifest, graph) for name, graph in manifest.graphs.items()}
        self.runners = self.graphs  # what `run` calls: the graphs, or the graphs through a hook (`hooked`)
        self.dispatcher = manifest.dispatcher()
        self.lock = threading.Lock()  # held by each graph call: see GraphCalls
        self.allowances: dict[tuple[float | None, float | None], Allowance] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def __repr__(self) -> str:
        m = self.manifest
        points = ", ".join(p.name for p in m.dispatch.operating_points(m.graphs))
        where = f" on {self.device}" if self.device else ""
        return (f"<Session {m.family} {m.target} bundle {str(self.bundle)!r}: {self.backend.describe()}{where}; "
                f"{len(m.graphs)} graphs, {m.rule.name} dispatch, operating points {points}>")

    @contextlib.contextmanager
    def hooked(self, hook: GraphHook) -> Iterator[None]:
        """Route every graph call made inside through `hook`, which sees its inputs and returns its outputs: the
        profiler counts and replays the calls of each operating point, the exporter records each graph's routed
        inputs, the golden vectors record every call. Hooks do not nest, and apply to calls from every thread."""
        if self.runners is not self.graphs:
            raise RuntimeError("this session is already hooked")

        def through(name: str, run: GraphRunner) -> GraphRunner:
            return lambda inputs: hook(name, inputs, run)

        self.runners = {name: through(name, run) for name, run in self.graphs.items()}
        try:
            yield
        finally:
            self.runners = self.graphs

    @property
    def takes_scale(self) -> bool:
        """Whether `run` takes a compute scale S (URNet's gated bundles)."""
        return self.manifest.rule.takes_scale

    def run(
        self, images: np.ndarray, *, scale: float | Sequence[float] | None = None, path: str | None = None,
        static: bool = False, budget_macs: float | None = None, budget_ms: float | None = None,
    ) -> RunResult:
        """Classify a batch of any size; see `runtime.preprocess.prepare` for the accepted inputs.

        `scale` is URNet's S in [0, 1], the share of blocks to run: one number,
        or one per image (default 1). `budget_macs` / `budget_ms` bound each
        image's cost, selector included; milliseconds are those measured on
        this session's device and backend: a Resizable bundle's own, or the
        device's latency table (runtime/serving/budgets.py: URNet runs the largest S
        that fits, DRNet and BlockDrop the paths that fit). A budget that admits
        one path skips the selector, and its MACs are not counted (docs/bundle.md).
        `path` makes every image take that path (the selector still runs and is counted);
        `static` runs the static full model alone, the baseline of every speedup.
        """
        _check_arguments(scale, path, static, budget_macs, budget_ms)
        if budget_ms is not None and not self.device:
            raise ValueError("budget_ms: latency is measured per device; pass device= to runtime.load")
        admitted = None
        if (budget_macs is not None or budget_ms is not None) and not self.manifest.rule.takes_budget:
            if scale is not None:
                raise ValueError("pass either scale= or a budget, not both: the budget picks S")
            chosen = self._allowance(budget_macs, budget_ms)
            scale, admitted = chosen.scale, chosen.paths
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = prepare(images, self.manifest.preprocessing)
        timings["preprocess"] = time.perf_counter() - start
        scales = self._scales(scale, len(batch))
        call = GraphCalls(self.runners, self.manifest.max_batch, timings, self.bundle, self.lock)
        if static:
            reference = self.manifest.dispatch.reference
            logits = call(reference, batch)[0]
            macs = np.full(len(batch), self.manifest.graphs[reference].macs, dtype=np.int64)
            return RunResult(logits, [reference] * len(batch), macs, timings)
        key = latency_key(self.device, self.backend.name) if self.device else None
        request = Request(
            scale=scales, path=path, budget_macs=budget_macs, budget_ms=budget_ms, latency_key=key, admitted=admitted,
        )
        decision = self.dispatcher(call, batch, request)
        return RunResult(decision.logits, decision.paths, decision.macs, timings)

    def _allowance(self, budget_macs: float | None, budget_ms: float | None) -> Allowance:
        """What a budget allows, computed once per budget: the table and manifest do not change under a session."""
        key = (budget_macs, budget_ms)
        chosen = self.allowances.get(key)
        if chosen is None:
            chosen = allowance(self.manifest, self.table, budget_macs=budget_macs, budget_ms=budget_ms)
            if len(self.allowances) >= self.ALLOWANCES:
                self.allowances.clear()
            self.allowances[key] = chosen
        return chosen

    def _scales(self, scale: float | Sequence[float] | None, count: int) -> np.ndarray | None:
        if not self.takes_scale:
            if scale is not None:
                raise ValueError(f"this {self.manifest.family} bundle has no compute scale; drop scale={scale!r}")
            return None
        values = np.asarray(1.0 if scale is None else scale, dtype=np.float32)
        if values.ndim > 1 or (values.ndim == 1 and len(values) != count):
            raise ValueError(f"scale must be one number or one per image ({count}), got shape {values.shape}")
        if not (np.isfinite(values) & (values >= 0) & (values <= 1)).all():
            raise ValueError(f"scale must lie in [0, 1], got {scale!r}")
        return np.array(np.broadcast_to(values, (count,)))  # a writable copy, one value per image


def _is_number(value: object) -> bool:
    """A real number: True and "0.5" are not."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_arguments(
    scale: object, path: object, static: object, budget_macs: object, budget_ms: object,
) -> None:
    """What every rule takes alike, checked before anything runs: each argument's type, by name, and the
    combinations that contradict each other. ValueError naming the argument."""
    if not isinstance(static, (bool, np.bool_)):
        raise ValueError(f"static must be True or False, got {static!r}")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"path must be a path's name (a string), got {path!r}")
    if scale is not None:
        values = scale if isinstance(scale, (list, tuple, np.ndarray)) else [scale]
        if not all(_is_number(v) for v in np.asarray(values, dtype=object).ravel()):
            raise ValueError(f"scale must be a number in [0, 1], or one per image, got {scale!r}")
    for name, value in (("budget_macs", budget_macs), ("budget_ms", budget_ms)):
        if value is not None and not (_is_number(value) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    budgeted = budget_macs is not None or budget_ms is not None
    if static and path is not None:
        raise ValueError("pass either path= or static=True, not both")
    if static and budgeted:
        raise ValueError("pass either static=True or a budget, not both: the static model has one cost")
    if path is not None and budgeted:
        raise ValueError("pass either path= or a budget, not both")


def load(
    bundle: str | Path, backend: str | None = None, *, threads: int | None = None, device: Device | None = None,
    table: str | Path | None = None,
) -> Session:
    """Open a bundle and prepare every graph on `backend` (default: the one its target implies).

    `device`, a devices.yaml entry, sets threads and (onnxruntime) execution providers.
    `table`, the device's latency table of this bundle (python -m runtime.profile
    table), lets `run` take budgets in milliseconds.

    >>> session = runtime.load("bundles/drnet-onnx")            # doctest: +SKIP
    >>> result = session.run(uint8_images_nhwc)                  # doctest: +SKIP
    >>> result.logits.shape, result.paths[:2], result.macs[:2]   # doctest: +SKIP
    ((360, 10), ['res16', 'res32'], array([3451904, 12826240]))
    """
    bundle = Path(bundle)
    manifest = open_bundle(bundle)
    if threads is None and device is not None:
        threads = device.threads
    name = backend or TARGETS[manifest.target].backend
    if device is not None and name not in device.backends:
        shared = [b for b in TARGETS[manifest.target].backends if b in device.backends]
        fix = (f"pass backend={shared[0]!r} (--backend {shared[0]})" if shared else
               f"no backend of this {manifest.target} bundle runs there: use a device that runs {name}")
        raise ValueError(f"device {device.name} runs {list(device.backends)}, not {name}, the backend of this "
                         f"{manifest.target} bundle: {fix}")
    chosen = create_backend(name, manifest.target, threads=threads, device=device)
    latency = None if table is None else _matching_table(Path(table), bundle, chosen.name, device)
    return Session(bundle, manifest, chosen, device.name if device else None, latency)


def _matching_table(path: Path, bundle: Path, backend: str, device: Device | None) -> LatencyTable:
    """The latency table at `path`, refused unless it measured this very bundle on this device and backend."""
    table = read_latency_table(path)
    if table.manifest_sha256 != sha256_of(bundle / MANIFEST_FILE):
        raise ValueError(f"{path}: measured another bundle ({table.bundle}); its manifest's sha256 differs")
    if device is None or (table.device, table.backend) != (device.name, backend):
        here = f"{device.name}/{backend}" if device else f"an unnamed device/{backend} (pass device=)"
        raise ValueError(f"{path}: measured on {table.device}/{table.backend}, not on {here}")
    return table
