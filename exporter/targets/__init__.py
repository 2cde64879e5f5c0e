"""Writing a split's graphs for one target; the table of targets itself is runtime.format.targets.TARGETS."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.graphs import ExportGraph
from runtime.format.devices import Device
from runtime.format.manifest import BuildPlan
from runtime.format.targets import get_target

__all__ = ["Int8Inputs", "Written", "write_artifacts", "default_device", "graph_precision"]

# Graph name -> the batches of inputs it was routed (each a tuple in input order), for the graphs to run int8.
Int8Inputs = Mapping[str, Sequence[tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class Written:
    """Where each graph landed (artifact file, entry inside it or None), and the device build plan if any."""

    placement: dict[str, tuple[str, str | None]]
    build: BuildPlan | None = None


def default_device(target: str, devices: dict[str, Device]) -> Device | None:
    """The first device in devices.yaml whose preferred backend runs `target`."""
    backend = get_target(target).backend
    return next((d for d in devices.values() if d.backends[0] == backend), None)


def graph_precision(target: str, precision: str, int8: bool) -> str:
    """A graph's precision in a `precision` bundle: int8 if quantized, else the target's float (fp16 where it has it)."""
    if int8:
        return "int8"
    if precision != "int8":
        return precision
    return "fp16" if "fp16" in get_target(target).precisions else "fp32"


def write_artifacts(
    target: str, graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None, max_batch: int,
    precision: str | None = None, int8: Int8Inputs | None = None,
) -> Written:
    """Write `graphs` for `target` into `directory`, each taking batches of 1 to `max_batch`.

    `precision` is the bundle's (default: the target's first); the graphs
    named in `int8` run int8, each calibrated on its batches of inputs (a
    weights-only target ignores them), and the others at `precision`, or the
    target's float where that is int8.
    """
    spec = get_target(target)
    precision = precision or spec.precisions[0]
    int8 = int8 or {}
    if precision not in spec.precisions:
        raise ValueError(f"target {target} writes precision {list(spec.precisions)}, not {precision!r}")
    writer = importlib.import_module(spec.writer)
    return writer.write(graphs, directory, device=device, max_batch=max_batch, precision=precision, int8=int8)
