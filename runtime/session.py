"""A loaded bundle: run the selector, then each sample's path. Written once for every backend."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.backends import DEFAULT_BACKEND, Backend, create_backend
from runtime.bundle import open_bundle
from runtime.dispatch import TimedGraphs, make_dispatcher
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
        self.dispatcher = make_dispatcher(manifest)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @property
    def takes_scale(self) -> bool:
        """Whether `run` takes a compute scale S (URNet's gated bundles)."""
        return self.manifest.dispatch.rule == "gated"

    def run(self, images: np.ndarray, *, scale: float | None = None) -> RunResult:
        """Classify a batch; see `runtime.preprocess.prepare` for the accepted inputs.

        `scale` is URNet's S in [0, 1]: the share of blocks to run (default 1).
        """
        if self.takes_scale:
            scale = 1.0 if scale is None else scale
            if not isinstance(scale, (int, float)) or not 0.0 <= scale <= 1.0:
                raise ValueError(f"scale must be a number in [0, 1], got {scale!r}")
        elif scale is not None:
            raise ValueError(f"this {self.manifest.family} bundle has no compute scale; drop scale={scale!r}")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = prepare(images, self.manifest.preprocessing)
        timings["preprocess"] = time.perf_counter() - start

        run = TimedGraphs(self.graphs, timings)
        logits = np.empty((len(batch), len(self.classes)), dtype=np.float32)
        paths, macs = [], np.empty(len(batch), dtype=np.int64)
        for i in range(len(batch)):
            logits[i], path, macs[i] = self.dispatcher(run, batch[i : i + 1], scale)
            paths.append(path)
        return RunResult(logits=logits, paths=paths, macs=macs, timings=timings)


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
