"""One split per dynamic family; a new family registers its own without touching the others."""

from __future__ import annotations

from torch import nn

from exporter.graphs import Split, UnsplittableModel
from exporter.splits import drnet
from trainer.families.drnet import DRNet

__all__ = ["SPLITS", "split_model"]

# family -> (model class the split understands, split function)
SPLITS = {"drnet": (DRNet, drnet.split)}


def split_model(model: nn.Module, family: str, resolution: int) -> Split:
    if family not in SPLITS:
        raise UnsplittableModel(f"no split for family {family!r}; the exporter splits {sorted(SPLITS)}")
    model_type, split = SPLITS[family]
    if not isinstance(model, model_type):
        raise UnsplittableModel(
            f"family {family!r} expects a {model_type.__name__}, got {type(model).__name__}; "
            "the checkpoint config and weights disagree"
        )
    return split(model.eval(), resolution)
