"""The registry of execution backends. Each turns a manifest graph into a callable on numpy batches.

Backends are imported only when chosen, so a device installs just the one it
uses. Which bundle targets a backend runs is said once, in runtime.format.targets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.format.devices import Device
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import Manifest
from runtime.format.targets import TARGETS

__all__ = ["Backend", "GraphRunner", "BACKENDS", "create_backend", "check_signature"]

# Runs one graph on a batch of 1..max_batch samples: inputs and outputs in manifest order.
GraphRunner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
# A tensor as an artifact declares it: its name (None where the format has none) and its
# shape, batch first; a dimension the artifact leaves open is a string or None.
Declared = tuple[str | None, tuple[int | str | None, ...]]


class Backend(Protocol):
    name: str

    def load(self, bundle: Path, manifest: Manifest, graph: Graph) -> GraphRunner:
        """A callable running `graph`; BundleError naming the artifact and graph if it cannot be loaded."""

    def describe(self) -> str:
        """What actually executes: library version, device, threads."""


@dataclass(frozen=True)
class _Entry:
    module: str
    install: str


BACKENDS = {
    "onnxruntime": _Entry("runtime.backends.onnxruntime", "pip install adaptive-edge[device-onnxruntime]"),
    "executorch": _Entry("runtime.backends.executorch", "pip install adaptive-edge[device-executorch]"),
    "coreml": _Entry("runtime.backends.coreml", "pip install adaptive-edge[device-coreml] (predicts on macOS only)"),
    "tensorrt": _Entry("runtime.backends.tensorrt", "pip install adaptive-edge[tensorrt]: tensorrt and cuda-python (on a Jetson: JetPack)"),
}


def create_backend(name: str, target: str, *, threads: int | None = None, device: Device | None = None) -> Backend:
    """Backend `name` for a bundle of `target`; `device` (devices.yaml) may set threads and providers."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {sorted(BACKENDS)}")
    if name not in TARGETS[target].backends:
        raise ValueError(f"backend {name!r} cannot run a bundle exported for target {target!r}; use {list(TARGETS[target].backends)}")
    entry = BACKENDS[name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as error:
        raise ImportError(f"backend {name!r} needs a package that is missing ({error}); {entry.install}") from None
    return module.create(threads=threads, device=device)


def check_signature(
    where: str, graph: Graph, max_batch: int, inputs: Sequence[Declared], outputs: Sequence[Declared]
) -> None:
    """Refuse an artifact whose tensors differ from the manifest's: names, ranks, shapes apart from the batch.

    `where` names the artifact and graph in the error. A batch dimension the
    artifact fixes must hold max_batch samples.
    """
    for side, specs, declared in (("inputs", graph.inputs, inputs), ("outputs", graph.outputs, outputs)):
        if len(specs) != len(declared):
            raise BundleError(f"{where}: the artifact has {len(declared)} {side}, the manifest lists {len(specs)}")
        for i, (spec, (name, shape)) in enumerate(zip(specs, declared)):
            field = f"graphs[{graph.name!r}].{side}[{i}]"
            if name is not None and name != spec.name:
                raise BundleError(f"{where}: {field}.name is {spec.name!r} but the artifact's is {name!r}")
            if len(shape) != 1 + len(spec.shape):
                raise BundleError(
                    f"{where}: {field}.shape {list(spec.shape)} has rank {len(spec.shape)} per sample, "
                    f"but the artifact's {list(shape)} has rank {len(shape) - 1} after the batch"
                )
            batch, *dims = shape
            if isinstance(batch, int) and batch < max_batch:
                raise BundleError(f"{where}: {field}: the artifact takes at most {batch} samples, the manifest's max_batch is {max_batch}")
            if any(isinstance(d, int) and d != s for d, s in zip(dims, spec.shape)):
                raise BundleError(f"{where}: {field}.shape is {list(spec.shape)} but the artifact's is {dims} per sample")

