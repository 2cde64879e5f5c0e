"""One split per dynamic family; a new family registers its own without touching the others."""

from __future__ import annotations

from torch import nn

from exporter.graphs import Split, UnsplittableModel
from torch import Tensor

from exporter.splits import blockdrop, drnet, urnet
from trainer.families.blockdrop import BlockDrop
from trainer.families.drnet import DRNet
from trainer.families.urnet import URNet

__all__ = ["SPLITS", "split_model"]

# family -> (model class the split understands, split function)
SPLITS = {
    "drnet": (DRNet, drnet.split),
    "blockdrop": (BlockDrop, blockdrop.split),
    "urnet": (URNet, urnet.split),
}


def split_model(
    model: nn.Module, family: str, resolution: int, *, calibration: Tensor | None = None, cache_paths: int = 8
) -> Split:
    """Static graphs and their dispatch for `model`; `calibration` images drive the block families' plan."""
    if family not in SPLITS:
        raise UnsplittableModel(f"no split for family {family!r}; the exporter splits {sorted(SPLITS)}")
    model_type, split = SPLITS[family]
    if not isinstance(model, model_type):
        raise UnsplittableModel(
            f"family {family!r} expects a {model_type.__name__}, got {type(model).__name__}; "
            "the checkpoint config and weights disagree"
        )
    return split(model.eval(), resolution, calibration=calibration, cache_paths=cache_paths)
