"""Splitting a trained model into static graphs, by the split module its family registers (trainer.families).

A split module is `exporter/splits/<family>.py`: `split(model, options: SplitOptions) -> Split`, and, where the
family takes export options of its own, `EXPORT_OPTIONS`: a frozen dataclass whose fields are those options, with
their defaults and, in each field's metadata, the help the exporter CLI shows. `PLANS_ON_CALIBRATION = True`
where the split's plan is made on calibration images. `EVERY_CANDIDATE`: the options that export every candidate
as its own graph (configurations, for Resizable), for a device cost table. `exporter.export(**options)` and
the CLI's flags both come from it, so neither names a family.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from exporter.graphs import Split, SplitOptions, UnsplittableModel
from trainer.families import FAMILIES

__all__ = [
    "split_model", "split_module", "family_options", "add_family_arguments", "family_option_names",
    "plans_on_calibration", "every_candidate_options",
]


def split_module(family: str) -> types.ModuleType:
    if family not in FAMILIES:
        raise UnsplittableModel(f"no split for family {family!r}; the exporter splits {sorted(FAMILIES)}")
    entry = FAMILIES[family]
    try:
        return importlib.import_module(entry.split)
    except ImportError as error:
        raise UnsplittableModel(f"family {family!r} names the split {entry.split!r}, which cannot be loaded: {error}") from None


def plans_on_calibration(family: str) -> bool:
    """Whether the family's split plans its graphs on calibration images (`PLANS_ON_CALIBRATION`): the exporter
    then draws the default ones when the user gives none."""
    return bool(getattr(split_module(family), "PLANS_ON_CALIBRATION", False))


def every_candidate_options(family: str) -> dict[str, Any]:
    """The split's options that export every candidate as a graph of its own (`EVERY_CANDIDATE`; none: it does)."""
    return dict(getattr(split_module(family), "EVERY_CANDIDATE", {}))


def _fields(family: str) -> tuple[dataclasses.Field, ...]:
    options = getattr(split_module(family), "EXPORT_OPTIONS", None)
    return dataclasses.fields(options) if options is not None else ()


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def family_options(family: str, given: Mapping[str, Any]) -> Any:
    """The family split's EXPORT_OPTIONS with `given` applied, or None where it takes none; an option it does not
    take is refused by name, with the ones it does."""
    module = split_module(family)
    takes = {f.name for f in _fields(family)}
    unknown = sorted(set(given) - takes)
    if unknown:
        offered = ", ".join(f"{f.name} ({_flag(f)})" for f in _fields(family)) or "none"
        raise ValueError(f"{', '.join(unknown)}: not an export option of a {family} model; its split takes {offered}")
    options_type = getattr(module, "EXPORT_OPTIONS", None)
    return None if options_type is None else options_type(**given)


def family_option_names() -> set[str]:
    return {f.name for family in FAMILIES for f in _fields(family)}


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument group per family with export options, flags from its EXPORT_OPTIONS; a flag left out is absent
    from the parsed arguments, so the family's default holds."""
    seen: dict[str, str] = {}
    for family in FAMILIES:
        fields = [f for f in _fields(family) if f.name not in seen]
        if not fields:
            continue
        group = parser.add_argument_group(f"{family} export options")
        for f in fields:
            seen[f.name] = family
            help_text = f.metadata.get("help", "")
            if f.type in (bool, "bool"):
                group.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                kind = f.metadata.get("parse", str)
                default = f" (default: {f.default})" if f.default is not None else ""
                group.add_argument(_flag(f), dest=f.name, type=kind, default=argparse.SUPPRESS,
                                   metavar=f.metadata.get("metavar"), help=help_text + default)


def split_model(
    model: nn.Module, family: str, resolution: int, *, calibration: Tensor | None = None,
    checkpoint: Path | None = None, target: str | None = None, precision: str | None = None, **options: Any,
) -> Split:
    """Static graphs and their dispatch for `model`, written for `target` at `precision` where given; `options`
    are the family split's own (EXPORT_OPTIONS)."""
    module = split_module(family)
    entry = FAMILIES[family]
    if not isinstance(model, entry.model_type):
        raise UnsplittableModel(
            f"family {family!r} expects a {entry.model_type.__name__}, got {type(model).__name__}; "
            "the checkpoint config and weights disagree"
        )
    split_options = SplitOptions(resolution, calibration, checkpoint, family_options(family, options), target, precision)
    return module.split(model.eval(), split_options)
