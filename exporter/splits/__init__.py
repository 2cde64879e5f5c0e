"""Splitting a trained model into static graphs, by the split module its family registers (trainer.families)."""

from __future__ import annotations

import importlib

from torch import Tensor, nn

from exporter.graphs import Split, SplitOptions, UnsplittableModel
from runtime.lookup_table import LookupTable
from trainer.families import FAMILIES

__all__ = ["split_model"]


def split_model(
    model: nn.Module,
    family: str,
    resolution: int,
    *,
    calibration: Tensor | None = None,
    cache_paths: int = 8,
    configurations: str = "frontier",
    table: LookupTable | None = None,
    selector: bool = True,
) -> Split:
    """Static graphs and their dispatch for `model`; see `SplitOptions` for what each option drives."""
    if family not in FAMILIES:
        raise UnsplittableModel(f"no split for family {family!r}; the exporter splits {sorted(FAMILIES)}")
    entry = FAMILIES[family]
    if not isinstance(model, entry.model_type):
        raise UnsplittableModel(
            f"family {family!r} expects a {entry.model_type.__name__}, got {type(model).__name__}; "
            "the checkpoint config and weights disagree"
        )
    try:
        split = importlib.import_module(entry.split).split
    except (ImportError, AttributeError) as error:
        raise UnsplittableModel(f"family {family!r} names the split {entry.split!r}, which cannot be loaded: {error}") from None
    options = SplitOptions(resolution, calibration, cache_paths, configurations, table, selector)
    return split(model.eval(), options)
