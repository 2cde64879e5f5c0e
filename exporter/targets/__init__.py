"""The one table of export targets. The CLI, verification and docs iterate over it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.graphs import ExportGraph

__all__ = ["Target", "TARGETS", "write_artifacts"]

# graph name -> (artifact file, entry inside it or None)
Placement = dict[str, tuple[str, str | None]]


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # exporter.targets.<name>, imported only when used
    runs_here: bool  # parity can be verified on this machine
    description: str


TARGETS = {
    t.name: t
    for t in (
        Target("onnx", "exporter.targets.onnx", True, "one .onnx file per graph, opset 18, static shapes"),
        Target("executorch", "exporter.targets.executorch", True, "one multi-method .pte lowered to XNNPACK"),
    )
}


def write_artifacts(target: str, graphs: tuple[ExportGraph, ...], directory: Path) -> Placement:
    """Write `graphs` for `target` into `directory`; returns where each graph landed."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    write: Callable[[tuple[ExportGraph, ...], Path], Placement] = importlib.import_module(TARGETS[target].module).write
    return write(graphs, directory)
