"""The registry of dynamic families: how to build, train, evaluate and split each one.

A family is one trainer module here and one split module in exporter/splits;
this table is the only place that names them together. The exporter and the
docs read it; the split module is named, not imported, so training needs no
exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.families import blockdrop, drnet, resizable, urnet
from trainer.torchvision_backbones import PREFIX, TORCHVISION_BACKBONES

TORCHVISION_RESNETS = tuple(PREFIX + name for name in TORCHVISION_BACKBONES if name.startswith("resnet"))

__all__ = ["Family", "FAMILIES", "get_family"]


@dataclass(frozen=True)
class Family:
    name: str
    model_type: type  # what `build` returns, and what the split understands
    options_type: type
    build: Callable  # (config.json's "model": backbone fields and "options") -> model_type
    fit: Callable  # (model, loader, *, phases: {name: Phase}, device, run: TrainingRun) -> {name: companion network}
    evaluate: Callable  # (model, loader, *, device, extras: {name: companion network} | None) -> metrics dict
    phases: tuple[str, ...]
    split: str  # exporter module: split(model, options: SplitOptions) -> Split, and its EXPORT_OPTIONS if any
    # Phases that train the plain backbone from scratch, which a pretrained one (--init) stands in for.
    # DRNet's multi-resolution pretraining and Resizable's supernet phase start from it instead.
    init_skips: tuple[str, ...] = ()
    # The backbones its model and split are written for: "cifar-resnet", or "torchvision:<name>".
    backbones: tuple[str, ...] = ("cifar-resnet",)
    build_extra: Callable | None = None  # (config.json's "model", companion name) -> nn.Module
    # Files a finished run writes beside its checkpoint, which its export reads: (checkpoint dir, config) -> path.
    companion: Callable | None = None
    # (options, DeviceCosts | None) -> options with the candidates its rule keeps on the device, before building.
    choose_candidates: Callable | None = None


FAMILIES = {
    "drnet": Family(
        "drnet", drnet.DRNet, drnet.DRNetOptions, drnet.build, drnet.fit, drnet.evaluate, ("pretrain", "finetune"),
        split="exporter.splits.drnet", backbones=("cifar-resnet", *(PREFIX + name for name in TORCHVISION_BACKBONES)),
        choose_candidates=drnet.choose_candidates,
    ),
    "blockdrop": Family(
        "blockdrop", blockdrop.BlockDrop, blockdrop.BlockDropOptions, blockdrop.build, blockdrop.fit, blockdrop.evaluate,
        ("pretrain", "curriculum", "finetune"), split="exporter.splits.blockdrop", build_extra=blockdrop.build_extra,
        init_skips=("pretrain",), backbones=("cifar-resnet", *TORCHVISION_RESNETS),
    ),
    "urnet": Family(
        "urnet", urnet.URNet, urnet.URNetOptions, urnet.build, urnet.fit, urnet.evaluate, ("pretrain", "gates", "joint"),
        split="exporter.splits.urnet", build_extra=urnet.build_extra, init_skips=("pretrain",),
        backbones=("cifar-resnet", *TORCHVISION_RESNETS),
    ),
    "resizable": Family(
        "resizable", resizable.ResizableNetwork, resizable.ResizableOptions, resizable.build, resizable.fit,
        resizable.evaluate, ("supernet", "target", "learner"), split="exporter.splits.resizable",
        backbones=("cifar-resnet", *TORCHVISION_RESNETS), companion=resizable.write_lookup_table,
    ),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}") from None
