"""devices.yaml: the devices a bundle is profiled against, with their backends and budgets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.manifest import COMPUTE_UNITS, PRECISIONS

__all__ = ["Device", "DEFAULT_DEVICES_FILE", "load_devices", "get_device"]

DEFAULT_DEVICES_FILE = Path(__file__).resolve().parent.parent / "devices.yaml"
_FIELDS = {"description", "backends", "threads", "precision", "compute_units", "workspace_mb", "budgets"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    backends: tuple[str, ...]
    threads: int | None
    precision: str
    macs_budget: int
    latency_budget_ms: float
    compute_units: str | None = None
    workspace_mb: int | None = None


def _device(name: str, entry: object, source: Path) -> Device:
    def fail(problem: str) -> ValueError:
        return ValueError(f"{source}: device {name!r}: {problem}")

    if not isinstance(entry, dict):
        raise fail("expected a mapping of fields")
    unknown = entry.keys() - _FIELDS
    if unknown:
        raise fail(f"unknown field(s) {sorted(unknown)}")
    for field in ("description", "backends", "budgets"):
        if field not in entry:
            raise fail(f"missing field {field!r}")
    backends = entry["backends"]
    if not isinstance(backends, list) or not backends or not all(isinstance(b, str) for b in backends):
        raise fail(f"backends must be a non-empty list of names, got {backends!r}")
    threads = entry.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise fail(f"threads must be a positive integer or null, got {threads!r}")
    precision = entry.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise fail(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    compute_units = entry.get("compute_units")
    if compute_units is not None and compute_units not in COMPUTE_UNITS:
        raise fail(f"compute_units {compute_units!r} is not one of {list(COMPUTE_UNITS)}")
    budgets = entry["budgets"]
    if not isinstance(budgets, dict) or set(budgets) != {"macs", "latency_ms"}:
        raise fail(f"budgets must hold exactly macs and latency_ms, got {budgets!r}")
    macs, latency = budgets["macs"], budgets["latency_ms"]
    if not isinstance(macs, int) or macs <= 0 or not isinstance(latency, (int, float)) or latency <= 0:
        raise fail(f"budgets must be positive numbers, got {budgets!r}")
    workspace = entry.get("workspace_mb")
    if workspace is not None and (not isinstance(workspace, int) or workspace <= 0):
        raise fail(f"workspace_mb must be a positive integer, got {workspace!r}")
    return Device(
        name=name,
        description=str(entry["description"]),
        backends=tuple(backends),
        threads=threads,
        precision=precision,
        macs_budget=macs,
        latency_budget_ms=float(latency),
        compute_units=compute_units,
        workspace_mb=workspace,
    )


def load_devices(path: str | Path = DEFAULT_DEVICES_FILE) -> dict[str, Device]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: devices file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of device names to entries")
    return {name: _device(name, entry, path) for name, entry in data.items()}


def get_device(name: str, path: str | Path = DEFAULT_DEVICES_FILE) -> Device:
    devices = load_devices(path)
    if name not in devices:
        raise ValueError(f"unknown device {name!r} in {path}; known: {sorted(devices)}")
    return devices[name]
