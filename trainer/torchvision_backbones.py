"""torchvision's ImageNet networks as the families' backbones: ResNet-50, ResNet-101, MobileNetV2.

Built from `torchvision.models` without weights: pretrained ones come from a
local state dict (`--init file.pth`, torchvision's format, read with
`weights_only=True`), so nothing downloads at run time. Families that keep a
BN set per resolution or scale get torchvision's BN layers converted in place
(trainer.switchable_bn.make_switchable).
"""

from __future__ import annotations

import re

from torch import Tensor, nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

from trainer.switchable_bn import make_switchable

__all__ = [
    "TORCHVISION_BACKBONES", "PREFIX", "torchvision_backbone", "resnet10", "inverted_residual_predictor", "ResNetBlocks",
    "Residual",
]

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


# MobileNetV2's stages (expansion t, channels c, blocks n, stride s) with one block each, where it stacks 1 to 4.
ONE_BLOCK_PER_STAGE = [[1, 16, 1, 1], [6, 24, 1, 2], [6, 32, 1, 2], [6, 64, 1, 2], [6, 96, 1, 1], [6, 160, 1, 2],
                       [6, 320, 1, 1]]


def inverted_residual_predictor(*, num_classes: int) -> nn.Module:
    """DRNet's predictor for MobileNetV2 (Sec. 4.4): ResNet-10's one block per stage, as inverted residual blocks.

    The paper's sentence breaks off after "we replace the residual block with
    an inverted residual block and"; this reading keeps MobileNetV2's seven
    stages, one block each, at half width. At 128 px it costs 16 MMACs, 5% of
    MobileNetV2 at 224, as ResNet-10 costs 7% of ResNet-50; ResNet-10 itself
    would cost as much as the whole MobileNetV2.
    """
    network = models.MobileNetV2(num_classes=num_classes, width_mult=0.5, inverted_residual_setting=ONE_BLOCK_PER_STAGE)
    network.in_channels = 3
    return network


class Residual(nn.Module):
    """A torchvision residual block, with the path a skipped block still takes: its shortcut alone."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    @property
    def downsample(self) -> nn.Module | None:
        return self.block.downsample

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.block.downsample is None else self.block.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResNetBlocks(nn.Module):
    """A torchvision ResNet laid out as the block families read a backbone: stem, one flat list of blocks, head.

    BlockDrop and URNet run or skip blocks by index, as on the CIFAR ResNet;
    layer1..layer4 become one list and `stages` records each layer's indices.
    Skipped downsampling blocks still run their projection (option B, as
    torchvision's and the papers' ImageNet ResNets have).
    """

    def __init__(self, network: ResNet) -> None:
        super().__init__()
        self.in_channels = 3
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        layers = [network.layer1, network.layer2, network.layer3, network.layer4]
        self.blocks = nn.ModuleList(Residual(block) for layer in layers for block in layer)
        starts = [sum(len(layer) for layer in layers[:i]) for i in range(len(layers) + 1)]
        self.stages = tuple(range(start, end) for start, end in zip(starts, starts[1:]))
        self.head = nn.Sequential(network.avgpool, nn.Flatten(1), network.fc)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def from_torchvision_names(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A torchvision ResNet state dict (`layer3.5.conv1.weight`) renamed to this layout (`blocks.12.block.conv1.weight`)."""
        stem = {"conv1": "stem.0", "bn1": "stem.1", "fc": "head.2"}
        renamed = {}
        for name, tensor in state.items():
            layer = re.match(r"layer(\d)\.(\d+)\.(.*)", name)
            if layer:
                index = self.stages[int(layer[1]) - 1][int(layer[2])]
                renamed[f"blocks.{index}.block.{layer[3]}"] = tensor
            else:
                module, _, field = name.partition(".")
                renamed[f"{stem.get(module, module)}.{field}"] = tensor
        return renamed
