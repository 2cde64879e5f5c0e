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
    "onnxruntime": _Entry("runtime.backends.onnxruntime", ("onnx",), "pip install onnxruntime"),
    "executorch": _Entry("runtime.backends.executorch", ("executorch",), "pip install executorch==1.5.1"),
}

DEFAULT_BACKEND = {"onnx": "onnxruntime", "executorch": "executorch"}


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
