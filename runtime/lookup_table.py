"""Resizable-NAS's lookup table (Resizable networks, Sec. 3.3): accuracy, MACs and measured latency per configuration.

The table is JSON (documented in docs/lookup_table.md). Querying it costs
nothing: the most accurate configuration within a MACs or latency budget. The
bundle's `budget` rule picks paths by the same function, so a table query and a
`Session.run(budget_ms=...)` always agree. Torch-free, like the rest of the
format layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from runtime.files import atomic_write

__all__ = [
    "TABLE_FILE", "TABLE_FORMAT", "TABLE_VERSION", "Entry", "LookupTable", "Costed", "BudgetError",
    "pick", "query", "frontier", "read_table", "write_table", "latency_key",
]

TABLE_FILE = "lookup_table.json"  # its place beside the checkpoint it describes
TABLE_FORMAT = "resizable-lookup-table"
TABLE_VERSION = 1


class BudgetError(ValueError):
    """No configuration fits the budget; the message names the cheapest cost."""


def latency_key(device: str, backend: str) -> str:
    """How latencies are keyed: where they were measured, e.g. "host-cpu/onnxruntime"."""
    return f"{device}/{backend}"


class Costed(Protocol):
    name: str
    accuracy: float
    latency_ms: Mapping[str, float]


@dataclass(frozen=True)
class Entry:
    name: str  # e.g. "rs100-075-050": the factors in percent, stage by stage
    factors: tuple[float, ...]  # one scale factor per stage
    macs: int  # conv + linear multiply-accumulates per image
    accuracy: float  # top-1 on the test split after BN calibration
    accuracy_uncalibrated: float  # the same with the BN statistics left from training (Table 5's ablation)
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # latency_key -> median ms at batch 1


@dataclass(frozen=True)
class LookupTable:
    factors: tuple[float, ...]  # the list L
    stages: int
    test_images: int
    calibration_images: int
    configurations: tuple[Entry, ...]
    learner_macs: int | None = None  # the ResizeLearner's own cost, when the checkpoint has one
    learner_latency_ms: Mapping[str, float] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)  # checkpoint, recipe, profile reports merged

    def entry(self, name: str) -> Entry:
        for entry in self.configurations:
            if entry.name == name:
                return entry
        raise KeyError(f"no configuration {name!r} in the table; it lists {[e.name for e in self.configurations]}")

    def latency_keys(self) -> list[str]:
        """Where latency was measured, for every configuration alike."""
        keys = set.intersection(*(set(e.latency_ms) for e in self.configurations))
        return sorted(keys)


def pick(
    entries: Sequence[Costed],
    macs: Sequence[int],
    *,
    budget_macs: float | None = None,
    budget_ms: float | None = None,
    key: str | None = None,
    overhead_macs: int = 0,
    overhead_ms: float = 0.0,
) -> list[int]:
    """Indices of `entries` whose cost (plus a per-image overhead, e.g. a selector) fits the budget, best first.

    Best is the most accurate; ties go to fewer MACs. `budget_ms` compares the
    latency measured at `key`. Raises BudgetError naming the cheapest cost when
    nothing fits.
    """
    if budget_ms is not None:
        if key is None:
            raise ValueError("budget_ms needs to know where latency was measured (a device and backend)")
        missing = [e.name for e in entries if key not in e.latency_ms]
        if missing:
            measured = sorted(set().union(*(e.latency_ms for e in entries)))
            raise ValueError(
                f"no latency measured on {key!r} for {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                f"measured on: {measured or 'nothing'} (profile the configurations there and merge the report)"
            )
    fits = []
    for i, (entry, cost) in enumerate(zip(entries, macs)):
        if budget_macs is not None and cost + overhead_macs > budget_macs:
            continue
        if budget_ms is not None and entry.latency_ms[key] + overhead_ms > budget_ms:
            continue
        fits.append(i)
    if not fits:
        cheapest = []
        if budget_macs is not None:
            cheapest.append(f"{min(macs) + overhead_macs} MACs")
        if budget_ms is not None:
            cheapest.append(f"{min(e.latency_ms[key] for e in entries) + overhead_ms:.3f} ms on {key}")
        raise BudgetError(f"no configuration fits the budget; the cheapest costs {' and '.join(cheapest)}")
    return sorted(fits, key=lambda i: (-entries[i].accuracy, macs[i]))


def query(
    table: LookupTable, *, budget_macs: float | None = None, budget_ms: float | None = None, key: str | None = None
) -> Entry:
    """The most accurate configuration within budget (Sec. 3.3); `key` names where `budget_ms` was measured.

    It picks from the frontier, as a bundle exported from it does, so that both
    agree even where accuracies tie.
    """
    entries = frontier(table)
    return entries[pick(entries, [e.macs for e in entries], budget_macs=budget_macs, budget_ms=budget_ms, key=key)[0]]


def frontier(table: LookupTable) -> list[Entry]:
    """Configurations no other beats on accuracy at no more cost, by MACs or by any latency measured.

    The union over cost measures, in table order: a bundle exported from it can
    answer a budget in MACs or in milliseconds on any measured device.
    """
    entries = table.configurations
    costs = [[e.macs for e in entries]] + [[e.latency_ms[k] for e in entries] for k in table.latency_keys()]
    kept = set()
    for cost in costs:
        best = -math.inf
        for i in sorted(range(len(entries)), key=lambda i: (cost[i], -entries[i].accuracy)):
            if entries[i].accuracy > best:
                kept.add(i)
                best = entries[i].accuracy
    return [entries[i] for i in sorted(kept)]


def _fail(path: Path, where: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {where}: {problem}")


def _number(path: Path, value: object, where: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(path, where, f"expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _latencies(path: Path, value: object, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected an object of device/backend -> ms, got {type(value).__name__}")
    return {str(k): _number(path, v, f"{where}[{k!r}]") for k, v in value.items()}


def read_table(path: str | Path) -> LookupTable:
    """Load and validate a lookup table, field by field; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lookup table (write one with `python -m trainer.resizable CHECKPOINT`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, "file", f"not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise _fail(path, "format", f"expected {TABLE_FORMAT!r}")
    if data.get("version") != TABLE_VERSION:
        raise _fail(path, "version", f"{data.get('version')!r}, this reader takes {TABLE_VERSION}")
    try:
        factors = tuple(_number(path, f, f"factors[{i}]", high=1.0) for i, f in enumerate(data["factors"]))
        if not all(factors) or len(set(factors)) != len(factors):
            raise _fail(path, "factors", f"{list(factors)} must be distinct numbers in (0, 1]")
        stages = int(data["stages"])
        entries = []
        for i, e in enumerate(data["configurations"]):
            where = f"configurations[{i}]"
            missing = {"name", "factors", "macs", "accuracy", "accuracy_uncalibrated"} - set(e)
            if missing:
                raise _fail(path, where, f"missing {sorted(missing)}")
            entry_factors = tuple(_number(path, f, f"{where}.factors", high=1.0) for f in e["factors"])
            if len(entry_factors) != stages or not set(entry_factors) <= set(factors):
                raise _fail(path, f"{where}.factors", f"{list(entry_factors)} is not one factor of {list(factors)} per stage")
            entries.append(Entry(
                name=str(e["name"]),
                factors=entry_factors,
                macs=int(_number(path, e["macs"], f"{where}.macs", low=1)),
                accuracy=_number(path, e["accuracy"], f"{where}.accuracy", high=1.0),
                accuracy_uncalibrated=_number(path, e["accuracy_uncalibrated"], f"{where}.accuracy_uncalibrated", high=1.0),
                latency_ms=_latencies(path, e.get("latency_ms", {}), f"{where}.latency_ms"),
            ))
        learner = data.get("learner")
        table = LookupTable(
            factors=factors,
            stages=stages,
            test_images=int(data["test_images"]),
            calibration_images=int(data["calibration_images"]),
            configurations=tuple(entries),
            learner_macs=None if learner is None else int(_number(path, learner["macs"], "learner.macs", low=1)),
            learner_latency_ms={} if learner is None else _latencies(path, learner.get("latency_ms", {}), "learner.latency_ms"),
            source={str(k): str(v) for k, v in data.get("source", {}).items()},
        )
    except KeyError as error:
        raise _fail(path, "fields", f"missing {error}") from None
    except (TypeError, ValueError) as error:
        if str(error).startswith(str(path)):
            raise
        raise _fail(path, "fields", str(error)) from None
    if not entries:
        raise _fail(path, "configurations", "lists none")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise _fail(path, "configurations", "names repeat")
    return table


def write_table(path: str | Path, table: LookupTable) -> None:
    """Write `table` atomically as documented JSON."""
    data = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "macs_convention": "conv + linear multiply-accumulates per image (torch.utils.flop_counter / 2)",
        "accuracy": "top-1 on the test split, after BN calibration on `calibration_images` training images",
        "latency": "median ms per image at batch 1 through Session.run, keyed device/backend (python -m runtime.profile)",
        "factors": list(table.factors),
        "stages": table.stages,
        "test_images": table.test_images,
        "calibration_images": table.calibration_images,
        "configurations": [{**asdict(e), "factors": list(e.factors), "latency_ms": dict(e.latency_ms)} for e in table.configurations],
        **({"learner": {"macs": table.learner_macs, "latency_ms": dict(table.learner_latency_ms)}}
           if table.learner_macs is not None else {}),
        "source": dict(table.source),
    }
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(Path(path), lambda temporary: Path(temporary).write_text(text))
