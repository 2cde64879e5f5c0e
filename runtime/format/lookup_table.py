"""Resizable-NAS's lookup table (Resizable networks, Sec. 3.3): accuracy, MACs and measured latency per configuration.

The table is JSON, documented in docs/lookup_table.md; this module reads it,
validating field by field, and writes it atomically. Querying it within a
budget is trainer/resizable_nas.py's, through the one budget solver
(runtime/serving/costs.py) that a bundle's `budget` rule also uses.
Torch-free, like the rest of the format layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.format.fields import FieldReader, FormatError
from runtime.format.files import atomic_write

__all__ = [
    "LOOKUP_TABLE_FILE", "LOOKUP_TABLE_FORMAT", "LOOKUP_TABLE_VERSION", "LookupTableError", "Entry", "LookupTable",
    "read_table", "write_table",
]

LOOKUP_TABLE_FILE = "lookup_table.json"  # its place beside the checkpoint it describes
LOOKUP_TABLE_FORMAT = "resizable-lookup-table"
LOOKUP_TABLE_VERSION = 1


class LookupTableError(FormatError):
    """A lookup table that does not follow docs/lookup_table.md."""


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


def _latencies(r: FieldReader, value: Any, where: str) -> dict[str, float]:
    table = r.typed(value, dict, where)
    return {r.text(k, f"{where} key"): r.bounded(v, f"{where}[{k!r}]", 0.0, float("inf")) for k, v in table.items()}


def _entry(r: FieldReader, data: Any, where: str, factors: tuple[float, ...], stages: int) -> Entry:
    e = r.fields(data, where, {"name", "factors", "macs", "accuracy", "accuracy_uncalibrated"},
                 frozenset({"latency_ms"}))
    entry_factors = tuple(r.bounded(f, f"{where}.factors", 0.0, 1.0) for f in r.typed(e["factors"], list, f"{where}.factors"))
    if len(entry_factors) != stages or not set(entry_factors) <= set(factors):
        raise r.fail(f"{where}.factors", f"{list(entry_factors)} is not one factor of {list(factors)} per stage")
    return Entry(
        name=r.text(e["name"], f"{where}.name"),
        factors=entry_factors,
        macs=r.count(e["macs"], f"{where}.macs", 1),
        accuracy=r.bounded(e["accuracy"], f"{where}.accuracy", 0.0, 1.0),
        accuracy_uncalibrated=r.bounded(e["accuracy_uncalibrated"], f"{where}.accuracy_uncalibrated", 0.0, 1.0),
        latency_ms=_latencies(r, e.get("latency_ms", {}), f"{where}.latency_ms"),
    )


def read_table(path: str | Path) -> LookupTable:
    """Load and validate a lookup table, field by field; LookupTableError naming the file and the field."""
    path = Path(path)
    r = FieldReader(path, LookupTableError)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no lookup table (write one with `python -m trainer.resizable_nas CHECKPOINT`)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise r.fail("file", f"not valid JSON ({error})") from None
    top = r.fields(
        data, "table",
        {"format", "version", "factors", "stages", "test_images", "calibration_images", "configurations"},
        frozenset({"macs_convention", "accuracy", "latency", "learner", "source"}),
    )
    if top["format"] != LOOKUP_TABLE_FORMAT:
        raise r.fail("format", f"expected {LOOKUP_TABLE_FORMAT!r}, got {top['format']!r}")
    if top["version"] != LOOKUP_TABLE_VERSION:
        raise r.fail("version", f"{top['version']!r}, this reader takes {LOOKUP_TABLE_VERSION}")
    factors = tuple(r.bounded(f, f"factors[{i}]", 0.0, 1.0) for i, f in enumerate(r.typed(top["factors"], list, "factors")))
    if not all(factors) or len(set(factors)) != len(factors):
        raise r.fail("factors", f"{list(factors)} must be distinct numbers in (0, 1]")
    stages = r.count(top["stages"], "stages", 1)
    entries = tuple(_entry(r, e, f"configurations[{i}]", factors, stages)
                    for i, e in enumerate(r.typed(top["configurations"], list, "configurations")))
    if not entries:
        raise r.fail("configurations", "lists none")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise r.fail("configurations", "names repeat")
    learner = None if top.get("learner") is None else r.fields(top["learner"], "learner", {"macs"}, frozenset({"latency_ms"}))
    source = r.typed(top.get("source", {}), dict, "source")
    return LookupTable(
        factors=factors,
        stages=stages,
        test_images=r.count(top["test_images"], "test_images"),
        calibration_images=r.count(top["calibration_images"], "calibration_images"),
        configurations=entries,
        learner_macs=None if learner is None else r.count(learner["macs"], "learner.macs", 1),
        learner_latency_ms={} if learner is None else _latencies(r, learner.get("latency_ms", {}), "learner.latency_ms"),
        source={str(k): str(v) for k, v in source.items()},
    )


def write_table(path: str | Path, table: LookupTable) -> None:
    """Write `table` atomically as documented JSON."""
    data = {
        "format": LOOKUP_TABLE_FORMAT,
        "version": LOOKUP_TABLE_VERSION,
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
