"""torchvision's ImageNet networks as the families' backbones: ResNet-50, ResNet-101, MobileNetV2.

Built from `torchvision.models` without weights: pretrained ones come from a
local state dict (`--init file.pth`, torchvision's format, read with
`weights_only=True`), so nothing downloads at run time. Families that keep a
BN set per resolution or scale get torchvision's BN layers converted in place
(trainer.switchable_bn.make_switchable).
"""

from __future__ import annotations

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

from trainer.switchable_bn import make_switchable

__all__ = ["TORCHVISION_BACKBONES", "PREFIX", "torchvision_backbone", "resnet10"]

PREFIX = "torchvision:"
TORCHVISION_BACKBONES = ("resnet50", "resnet101", "mobilenet_v2")


def torchvision_backbone(name: str, *, num_classes: int, bn_sets: int = 1) -> nn.Module:
    """`name` from TORCHVISION_BACKBONES, randomly initialized, with `bn_sets` BN sets where more than one."""
    if name not in TORCHVISION_BACKBONES:
        raise ValueError(f"unknown torchvision backbone {name!r}; choose from {list(TORCHVISION_BACKBONES)}")
    network = models.get_model(name, weights=None, num_classes=num_classes)
    network.in_channels = 3  # what the families probe their MACs with, as on the CIFAR ResNet
    return make_switchable(network, bn_sets) if bn_sets > 1 else network


def resnet10(*, num_classes: int) -> ResNet:
    """Four stages of one basic block each: DRNet's ImageNet resolution predictor (Sec. 4.1)."""
    network = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    network.in_channels = 3
    return network
