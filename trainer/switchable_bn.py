"""BatchNorm with one statistics set per operating point, switched as a whole.

A backbone that runs at several input resolutions (DRNet) or feature-map scales
(Resizable networks) sees a different activation distribution at each one, so
each keeps its own BN set (DRNet, Sec. 3.2). Everything else is shared.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["SwitchableBatchNorm2d", "make_switchable", "use_bn_set", "freeze_bn_set", "freeze_active_bn_sets"]


class SwitchableBatchNorm2d(nn.Module):
    def __init__(self, num_features: int, num_sets: int) -> None:
        super().__init__()
        if num_sets < 1:
            raise ValueError(f"num_sets must be at least 1, got {num_sets}")
        self.sets = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in range(num_sets))
        self.active = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.sets[self.active](x)


def make_switchable(model: nn.Module, num_sets: int) -> nn.Module:
    """Replace every BatchNorm2d of `model` in place by a switchable one whose sets all start as copies of it.

    For networks built by others (torchvision's): their pretrained statistics
    and affine weights become every set's starting point.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                switchable = SwitchableBatchNorm2d(child.num_features, num_sets)
                switchable.sets = nn.ModuleList(copy.deepcopy(child) for _ in range(num_sets))
                setattr(module, name, switchable)
    return model


def _switchables(model: nn.Module) -> list[SwitchableBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SwitchableBatchNorm2d)]


def _check_index(layers: list[SwitchableBatchNorm2d], index: int) -> None:
    for layer in layers:
        if not 0 <= index < len(layer.sets):
            raise IndexError(f"BN set {index} does not exist; the model has {len(layer.sets)}")


@contextlib.contextmanager
def use_bn_set(model: nn.Module, index: int) -> Iterator[None]:
    """Run `model` with BN set `index` everywhere, restoring the previous choice after."""
    layers = _switchables(model)
    _check_index(layers, index)
    previous = [layer.active for layer in layers]
    for layer in layers:
        layer.active = index
    try:
        yield
    finally:
        for layer, active in zip(layers, previous):
            layer.active = active


def freeze_bn_set(model: nn.Module, index: int) -> nn.Module:
    """A copy of `model` whose switchable BNs are replaced by plain BN set `index`.

    The copy is a static network: exporters see ordinary BatchNorm2d and fold it.
    """
    with use_bn_set(model, index):
        return freeze_active_bn_sets(model)


def freeze_active_bn_sets(model: nn.Module) -> nn.Module:
    """A copy of `model` whose switchable BNs are replaced by their active plain BN.

    For networks that select sets part by part (a Resizable network picks one per
    stage), after `use_bn_set` on each part.
    """
    frozen = copy.deepcopy(model)
    for module in list(frozen.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, SwitchableBatchNorm2d):
                setattr(module, child_name, child.sets[child.active])
    return frozen
