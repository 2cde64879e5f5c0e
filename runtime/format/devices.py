"""devices.yaml: the devices a bundle is profiled against, with their backends and budgets.

The file ships inside this package, so a device that installed only the
runtime (`pip install adaptive-edge[device-onnxruntime]`) finds it; the fields
are documented in its header. Pass another file to `load_devices` or to
`python -m runtime.profile --devices FILE`.

>>> from runtime.format.devices import get_device
>>> device = get_device("jetson-orin-nano")
>>> device.opt_batch, device.max_batch, device.providers
(8, 32, ('TensorrtExecutionProvider', 'CUDAExecutionProvider'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.format.manifest import COMPUTE_UNITS, PRECISIONS

__all__ = [
    "Device", "DEFAULT_DEVICES_FILE", "ONNXRUNTIME_PROVIDERS", "WEIGHT_SHARING", "load_devices", "get_device",
    "default_weight_sharing", "check_weight_sharing",
]

# Package data next to this module (declared in pyproject.toml). A plain path, not an
# importlib.resources handle: the runtime is always installed unpacked, and callers
# (the profiler's --devices default, the tests) want a Path to print and read.
DEFAULT_DEVICES_FILE = Path(__file__).resolve().with_name("devices.yaml")

# The onnxruntime execution providers a device may ask for, by onnxruntime's names.
ONNXRUNTIME_PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "CoreMLExecutionProvider",
    "XnnpackExecutionProvider",
    "QNNExecutionProvider",
)

# How onnxruntime holds a bundle's weights (runtime/backends/onnxruntime.py): one buffer per distinct optimized
# tensor shared by every graph's session, or a copy per session. Memory and latency of each:
# benchmarks/results/memory_onnxruntime.md.
WEIGHT_SHARING = ("shared", "per-session")

_FIELDS = {
    "description", "backends", "threads", "precision", "compute_units", "workspace_mb", "batch", "providers",
    "weight_sharing", "budgets",
}


@dataclass(frozen=True)
class Device:
    """One devices.yaml entry. Graphs are exported with a dynamic batch from 1 to
    `max_batch`; TensorRT optimization profiles are tuned for `opt_batch`.
    `providers` are onnxruntime execution providers, preferred first (None:
    onnxruntime's default); `weight_sharing` is one of WEIGHT_SHARING (None:
    `default_weight_sharing` of the providers)."""

    name: str
    description: str
    backends: tuple[str, ...]
    threads: int | None
    precision: str
    macs_budget: int
    latency_budget_ms: float
    compute_units: str | None = None
    workspace_mb: int | None = None
    opt_batch: int = 1
    max_batch: int = 32
    providers: tuple[str, ...] | None = None
    weight_sharing: str | None = None


def default_weight_sharing(providers: tuple[str, ...] | None) -> str:
    """Shared on the CPU alone; per session where another provider copies each session's weights to its device."""
    return "shared" if providers in (None, ("CPUExecutionProvider",)) else "per-session"


def check_weight_sharing(value: object, providers: tuple[str, ...] | None) -> None:
    """ValueError unless `value` is one of WEIGHT_SHARING and, if shared, the providers are the CPU's alone."""
    if value not in WEIGHT_SHARING:
        raise ValueError(f"weight_sharing {value!r} is not one of {list(WEIGHT_SHARING)}")
    if value == "shared" and providers not in (None, ("CPUExecutionProvider",)):
        raise ValueError(f"weight_sharing 'shared' shares CPU buffers, but providers {list(providers)} copy the "
                         "weights to their device for each session: use 'per-session'")


def _is_positive_int(value: object) -> bool:
    # YAML's `true` loads as a bool, which is an int; it must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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
    if threads is not None and not _is_positive_int(threads):
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
    if workspace is not None and not _is_positive_int(workspace):
        raise fail(f"workspace_mb must be a positive integer, got {workspace!r}")
    batch = entry.get("batch", {"opt": Device.opt_batch, "max": Device.max_batch})
    if not isinstance(batch, dict) or set(batch) != {"opt", "max"}:
        raise fail(f"batch must hold exactly opt and max, got {batch!r}")
    if not (_is_positive_int(batch["opt"]) and _is_positive_int(batch["max"]) and batch["opt"] <= batch["max"]):
        raise fail(f"batch must be integers with 1 <= opt <= max, got {batch!r}")
    providers = entry.get("providers")
    if providers is not None:
        if not isinstance(providers, list) or not providers:
            raise fail(f"providers must be a non-empty list of onnxruntime execution providers, got {providers!r}")
        unknown = [p for p in providers if p not in ONNXRUNTIME_PROVIDERS]
        if unknown:
            raise fail(f"providers {unknown} are not among {list(ONNXRUNTIME_PROVIDERS)}")
        if len(set(providers)) != len(providers):
            raise fail(f"providers must not repeat a provider, got {providers!r}")
        # Providers configure onnxruntime only; anywhere else they would be silently ignored.
        if "onnxruntime" not in backends:
            raise fail(f"providers are set but backends {backends!r} do not include onnxruntime")
        providers = tuple(providers)
    sharing = entry.get("weight_sharing")
    if sharing is not None:
        if "onnxruntime" not in backends:
            raise fail(f"weight_sharing is set but backends {backends!r} do not include onnxruntime")
        try:
            check_weight_sharing(sharing, providers)
        except ValueError as error:
            raise fail(str(error)) from None
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
        opt_batch=batch["opt"],
        max_batch=batch["max"],
        providers=providers,
        weight_sharing=sharing,
    )


def load_devices(path: str | Path = DEFAULT_DEVICES_FILE) -> dict[str, Device]:
    """Every device in `path` by name; a malformed entry raises ValueError naming file, device and field."""
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
    """The device called `name` in `path`; an unknown name raises ValueError listing the known ones."""
    devices = load_devices(path)
    if name not in devices:
        raise ValueError(f"unknown device {name!r} in {path}; known: {sorted(devices)}")
    return devices[name]
