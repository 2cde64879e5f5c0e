"""The registry of dynamic families: how to build, train and evaluate each one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.families import blockdrop, drnet, urnet

__all__ = ["Family", "FAMILIES", "get_family"]


@dataclass(frozen=True)
class Family:
    name: str
    options_type: type
    build: Callable  # (model config dict) -> nn.Module
    fit: Callable  # (model, loader, *, phases, device) -> {name: companion network}
    evaluate: Callable  # (model, loader, *, device, extras) -> metrics dict
    phases: tuple[str, ...]
    build_extra: Callable | None = None  # (model config, name) -> companion network
    plot: Callable | None = None  # (metrics, directory) -> [written PNG paths]


FAMILIES = {
    "drnet": Family("drnet", drnet.DRNetOptions, drnet.build, drnet.fit, drnet.evaluate, ("pretrain", "finetune")),
    "blockdrop": Family(
        "blockdrop", blockdrop.BlockDropOptions, blockdrop.build, blockdrop.fit, blockdrop.evaluate,
        ("pretrain", "curriculum", "finetune"),
    ),
    "urnet": Family(
        "urnet", urnet.URNetOptions, urnet.build, urnet.fit, urnet.evaluate, ("pretrain", "gates", "joint"),
        build_extra=urnet.build_extra,
    ),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}") from None
