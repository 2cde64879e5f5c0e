"""A loaded bundle: run the selector once on the batch, then each group of samples on its path.

Written once for every backend and every rule: the rule's dispatcher decides
which graphs run on which samples, and this module calls them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.backends import Backend, GraphRunner, create_backend
from runtime.budgets import allowance
from runtime.bundle import open_bundle
from runtime.devices import Device
from runtime.files import sha256_of
from runtime.latency_table import LatencyTable, read_latency_table
from runtime.lookup_table import latency_key
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.preprocess import prepare
from runtime.rules import Request
from runtime.targets import TARGETS

__all__ = ["RunResult", "Session", "load"]


@dataclass
class RunResult:
    logits: np.ndarray  # (N, classes) float32
    paths: list[str]  # per sample, the path it took
    macs: np.ndarray  # (N,) int64, selector included
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "preprocess", then per graph, summed over calls


class GraphCalls:
    """Calls graphs by name on batches of any size: in chunks of at most `max_batch`, timing each graph."""

    __slots__ = ("graphs", "max_batch", "timings")

    def __init__(self, graphs: dict[str, GraphRunner], max_batch: int, timings: dict[str, float]) -> None:
        self.graphs, self.max_batch, self.timings = graphs, max_batch, timings

    def __call__(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        run, size = self.graphs[name], self.max_batch
        start = time.perf_counter()
        if len(inputs[0]) <= size:
            outputs = run(inputs)
        else:
            chunks = [run([x[i : i + size] for x in inputs]) for i in range(0, len(inputs[0]), size)]
            outputs = [np.concatenate(parts) for parts in zip(*chunks)]
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return outputs


class Session:
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
        self.dispatcher = manifest.rule.dispatcher(manifest)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @contextlib.contextmanager
    def observing(self, observer: Callable[[str, Sequence[np.ndarray]], object]) -> Iterator[None]:
        """Call `observer(graph name, inputs)` before every graph call made inside: the profiler counts the
        calls of each operating point, the exporter records the inputs each graph is routed."""
        original = dict(self.graphs)

        def observed(name: str, run: GraphRunner) -> GraphRunner:
            def call(inputs):
                observer(name, inputs)
                return run(inputs)
            return call

        self.graphs.update({name: observed(name, run) for name, run in original.items()})
        try:
            yield
        finally:
            self.graphs.update(original)

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
        device's latency table (runtime/budgets.py: URNet runs the largest S
        that fits, DRNet and BlockDrop the paths that fit). `path` makes every
        image take that path (the selector still runs and is counted);
        `static` runs the static full model alone, the baseline of every speedup.
        """
        if static and path is not None:
            raise ValueError("pass either path= or static=True, not both")
        budget = {"budget_macs": budget_macs, "budget_ms": budget_ms}
        for name, value in budget.items():
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if budget_ms is not None and not self.device:
            raise ValueError("budget_ms: latency is measured per device; pass device= to runtime.load")
        budgeted = budget_macs is not None or budget_ms is not None
        allowed = None
        if budgeted and not self.manifest.rule.takes_budget and not static:
            if path is not None:
                raise ValueError("pass either path= or a budget, not both")
            if scale is not None:
                raise ValueError("pass either scale= or a budget, not both: the budget picks S")
            chosen = allowance(self.manifest, self.table, budget_macs=budget_macs, budget_ms=budget_ms)
            scale, allowed = chosen.scale, chosen.paths
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = prepare(images, self.manifest.preprocessing)
        timings["preprocess"] = time.perf_counter() - start
        scales = self._scales(scale, len(batch))
        call = GraphCalls(self.graphs, self.manifest.max_batch, timings)
        if static:
            reference = self.manifest.dispatch.reference
            logits = call(reference, batch)[0]
            macs = np.full(len(batch), self.manifest.graphs[reference].macs, dtype=np.int64)
            return RunResult(logits, [reference] * len(batch), macs, timings)
        key = latency_key(self.device, self.backend.name) if self.device else None
        request = Request(
            scale=scales, path=path, budget_macs=budget_macs, budget_ms=budget_ms, latency_key=key, allowed=allowed,
        )
        decision = self.dispatcher(call, batch, request)
        return RunResult(decision.logits, decision.paths, decision.macs, timings)

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
