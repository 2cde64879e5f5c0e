"""A loaded bundle: run the selector, then each sample's path. Written once for every backend."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.backends import DEFAULT_BACKEND, Backend, create_backend
from runtime.bundle import open_bundle
from runtime.manifest import Manifest
from runtime.preprocess import prepare

__all__ = ["RunResult", "Session", "load"]


@dataclass
class RunResult:
    logits: np.ndarray  # (N, classes) float32
    paths: list[str]  # per sample, the path it took
    macs: np.ndarray  # (N,) int64, selector included
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over the batch


class Session:
    def __init__(self, bundle: Path, manifest: Manifest, backend: Backend) -> None:
        self.bundle = bundle
        self.manifest = manifest
        self.backend = backend
        self.graphs = {name: backend.load(bundle, graph) for name, graph in manifest.graphs.items()}
        dispatch = manifest.dispatch
        self.path_macs = np.array([manifest.path_macs(p) for p in dispatch.paths], dtype=np.int64)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def run(self, images: np.ndarray) -> RunResult:
        """Classify a batch; see `runtime.preprocess.prepare` for the accepted inputs."""
        timings: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        batch = prepare(images, self.manifest.preprocessing)
        timings["preprocess"] = time.perf_counter() - start

        dispatch = self.manifest.dispatch
        selector = self.graphs[dispatch.selector]
        logits = np.empty((len(batch), len(self.classes)), dtype=np.float32)
        chosen = np.empty(len(batch), dtype=np.int64)
        for i in range(len(batch)):
            sample = batch[i : i + 1]
            start = time.perf_counter()
            scores = selector([sample])[0]
            middle = time.perf_counter()
            chosen[i] = int(np.argmax(scores[0]))
            path = dispatch.paths[chosen[i]]
            logits[i] = self.graphs[path.graph]([sample])[0][0]
            end = time.perf_counter()
            timings[dispatch.selector] += middle - start
            timings[path.graph] += end - middle
        return RunResult(
            logits=logits,
            paths=[dispatch.paths[c].name for c in chosen],
            macs=self.path_macs[chosen],
            timings=dict(timings),
        )


def load(bundle: str | Path, backend: str | None = None, *, threads: int | None = None) -> Session:
    """Open a bundle and prepare every graph on `backend` (default: the one its target implies).

    >>> session = runtime.load("bundles/drnet-onnx")            # doctest: +SKIP
    >>> result = session.run(uint8_images_nhwc)                  # doctest: +SKIP
    >>> result.logits.shape, result.paths[:2], result.macs[:2]   # doctest: +SKIP
    ((360, 10), ['res16', 'res32'], array([3451904, 12826240]))
    """
    bundle = Path(bundle)
    manifest = open_bundle(bundle)
    name = backend or DEFAULT_BACKEND.get(manifest.target)
    if name is None:
        raise ValueError(f"{bundle}: target {manifest.target!r} has no runtime backend here; pass backend=")
    return Session(bundle, manifest, create_backend(name, manifest.target, threads=threads))
