"""Field-by-field reading of the project's JSON files, and the graph types every rule reads.

The manifest, each rule's section, the latency table and the lookup table
are all read through `FieldReader`, so every error names the file and the
field, and each file raises its own kind of `FormatError`. Plain Python: the
format layer imports no numpy and no torch.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DTYPES", "FormatError", "BundleError", "TensorSpec", "Graph", "FieldReader"]

DTYPES = ("float32",)


class FormatError(ValueError):
    """A file that does not follow its documented format; the message names the file and the field."""


class BundleError(FormatError):
    """A bundle that cannot be trusted; the message names the offending file."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # per sample: the batch dimension, first, is not listed
    dtype: str = "float32"


@dataclass(frozen=True)
class Graph:
    """One static graph: an artifact file, and the method inside it for multi-method formats."""

    name: str
    artifact: str
    entry: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    macs: int  # per sample
    precision: str = "fp32"  # from version 6, written unless fp32: what its weights and activations run in


class FieldReader:
    """Typed field access that names the file and the field in every error.

    `error` is the kind of FormatError the file raises. `graphs` are the
    manifest's graphs, once read, which the rules' sections refer to by name.
    """

    def __init__(self, source: Path, error: type[FormatError] = BundleError) -> None:
        self.source = source
        self.error = error
        self.graphs: dict[str, Graph] = {}

    def fail(self, where: str, problem: str) -> FormatError:
        return self.error(f"{self.source}: {where}: {problem}")

    def fields(self, data: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object, got {type(data).__name__}")
        missing = required - data.keys()
        if missing:
            raise self.fail(where, f"missing field(s) {sorted(missing)}")
        unknown = data.keys() - required - optional
        if unknown:
            raise self.fail(where, f"unknown field(s) {sorted(unknown)}")
        return data

    def typed(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where, f"expected {expected}, got {value!r}")
        return value

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not self.typed(value, str, where):
            raise self.fail(where, "must not be empty")
        return value

    def count(self, value: Any, where: str, minimum: int = 0) -> int:
        if self.typed(value, int, where) < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return value

    def number(self, value: Any, where: str) -> float:
        return float(self.typed(value, (int, float), where))

    def bounded(self, value: Any, where: str, low: float, high: float) -> float:
        """A number in [low, high]; NaN is refused."""
        number = self.number(value, where)
        if not low <= number <= high:
            raise self.fail(where, f"must be in [{low:g}, {high:g}], got {value!r}")
        return number

    def choice(self, value: Any, options: tuple | dict, where: str) -> Any:
        if not isinstance(value, Hashable) or value not in options:  # a list or object is never a choice
            raise self.fail(where, f"{value!r} is not one of {list(options)}")
        return value

    def floats(self, value: Any, where: str, length: int) -> tuple[float, ...]:
        items = self.typed(value, list, where)
        if len(items) != length:
            raise self.fail(where, f"expected {length} numbers, got {len(items)}")
        return tuple(self.number(v, f"{where}[{i}]") for i, v in enumerate(items))

    def graph(self, value: Any, where: str) -> str:
        """A reference to one of the manifest's graphs."""
        return self.choice(value, self.graphs, where)

    def logits(self, graph: str, classes: int) -> None:
        """Check that `graph`'s first output is one logit per class."""
        shape = self.graphs[graph].outputs[0].shape
        if shape != (classes,):
            raise self.fail(f"graphs[{graph!r}].outputs[0]", f"shape {list(shape)} is not [{classes}], one logit per class")

    def tensor(self, data: Any, where: str) -> TensorSpec:
        data = self.fields(data, where, {"name", "shape", "dtype"})
        shape = self.typed(data["shape"], list, f"{where}.shape")
        return TensorSpec(
            name=self.text(data["name"], f"{where}.name"),
            shape=tuple(self.count(d, f"{where}.shape[{i}]", 1) for i, d in enumerate(shape)),
            dtype=self.choice(data["dtype"], DTYPES, f"{where}.dtype"),
        )

    def tensors(self, data: Any, where: str) -> tuple[TensorSpec, ...]:
        items = self.typed(data, list, where)
        if not items:
            raise self.fail(where, "must list at least one tensor")
        specs = tuple(self.tensor(item, f"{where}[{i}]") for i, item in enumerate(items))
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise self.fail(where, f"tensor names repeat: {names}")
        return specs
