"""Writing a split's graphs for one target; the table of targets itself is runtime.targets.TARGETS."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from exporter.graphs import ExportGraph
from runtime.devices import Device
from runtime.manifest import BuildPlan
from runtime.targets import get_target

__all__ = ["Written", "write_artifacts", "default_device"]


@dataclass(frozen=True)
class Written:
    """Where each graph landed (artifact file, entry inside it or None), and the device build plan if any."""

    placement: dict[str, tuple[str, str | None]]
    build: BuildPlan | None = None


def default_device(target: str, devices: dict[str, Device]) -> Device | None:
    """The first device in devices.yaml whose preferred backend runs `target`."""
    backend = get_target(target).backend
    return next((d for d in devices.values() if d.backends[0] == backend), None)


def write_artifacts(
    target: str, graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None, max_batch: int,
    calibration=None,
) -> Written:
    """Write `graphs` for `target` into `directory`, each taking batches of 1 to `max_batch`."""
    spec = get_target(target)
    extra = {"calibration": calibration} if spec.takes_calibration else {}
    return importlib.import_module(spec.writer).write(graphs, directory, device=device, max_batch=max_batch, **extra)
