"""The one table of export targets. The CLI, verification and docs iterate over it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from exporter.graphs import ExportGraph
from runtime.devices import Device
from runtime.manifest import BuildPlan

__all__ = ["Target", "TARGETS", "Written", "write_artifacts", "default_device"]


@dataclass(frozen=True)
class Written:
    """Where each graph landed (artifact file, entry inside it or None), and the device build plan if any."""

    placement: dict[str, tuple[str, str | None]]
    build: BuildPlan | None = None


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # exporter.targets.<name>: write(graphs, directory, *, device) -> Written
    backend: str  # the runtime backend a device uses
    verify_backend: str | None  # the backend that checks parity on this machine; None: none can
    description: str
    takes_calibration: bool = False  # write() also takes calibration images (int8 engines)


TARGETS = {
    t.name: t
    for t in (
        Target("onnx", "exporter.targets.onnx", "onnxruntime", "onnxruntime",
               "one .onnx file per graph, opset 18, static shapes"),
        Target("executorch", "exporter.targets.executorch", "executorch", "executorch",
               "one multi-method .pte lowered to XNNPACK, weights stored once"),
        Target("coreml", "exporter.targets.coreml", "coreml", None,
               "one multifunction .mlpackage, weights deduplicated; predicts on macOS only"),
        Target("tensorrt", "exporter.targets.tensorrt", "tensorrt", "onnxruntime",
               "ONNX prepared for TensorRT plus a build plan; engines are built on the device",
               takes_calibration=True),
    )
}


def default_device(target: str, devices: dict[str, Device]) -> Device | None:
    """The first device in devices.yaml whose preferred backend runs `target`."""
    backend = TARGETS[target].backend
    return next((d for d in devices.values() if d.backends[0] == backend), None)


def write_artifacts(
    target: str, graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None, calibration=None
) -> Written:
    """Write `graphs` for `target` into `directory`."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {sorted(TARGETS)}")
    extra = {"calibration": calibration} if TARGETS[target].takes_calibration else {}
    return importlib.import_module(TARGETS[target].module).write(graphs, directory, device=device, **extra)
