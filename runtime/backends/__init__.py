"""Pluggable execution backends. Each turns a manifest graph into a callable on numpy arrays.

Backends are imported only when chosen, so a device installs just the one it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.manifest import Graph

__all__ = ["Backend", "GraphRunner", "BACKENDS", "DEFAULT_BACKEND", "create_backend"]

GraphRunner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


class Backend(Protocol):
    name: str

    def load(self, bundle: Path, graph: Graph) -> GraphRunner:
        """A callable running `graph` on its inputs, in manifest order."""

    def describe(self) -> str:
        """What actually executes: library version, device, threads."""


@dataclass(frozen=True)
class _Entry:
    module: str
    targets: tuple[str, ...]  # bundle targets this backend can run
    install: str


BACKENDS = {
    # TensorRT bundles hold plain ONNX graphs, so onnxruntime runs them too (parity checks, fallback).
    "onnxruntime": _Entry("runtime.backends.onnxruntime", ("onnx", "tensorrt"), "pip install onnxruntime"),
    "executorch": _Entry("runtime.backends.executorch", ("executorch",), "pip install executorch==1.5.1"),
    "coreml": _Entry("runtime.backends.coreml", ("coreml",), "pip install coremltools==9.0 (predicts on macOS only)"),
    "tensorrt": _Entry("runtime.backends.tensorrt", ("tensorrt",), "pip install .[tensorrt]: tensorrt and cuda-python (on the device: JetPack or NVIDIA's index)"),
}

DEFAULT_BACKEND = {"onnx": "onnxruntime", "executorch": "executorch", "coreml": "coreml", "tensorrt": "tensorrt"}


def create_backend(name: str, target: str, *, threads: int | None = None) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {sorted(BACKENDS)}")
    entry = BACKENDS[name]
    if target not in entry.targets:
        raise ValueError(f"backend {name!r} cannot run a bundle exported for target {target!r}")
    try:
        module = importlib.import_module(entry.module)
    except ImportError as error:
        raise ImportError(f"backend {name!r} needs a package that is missing ({error}); {entry.install}") from None
    return module.create(threads=threads)
