"""CIFAR-style ResNet (He et al., 2016, Sec. 4.2) shared by every dynamic family.

Depth is 6n+2: a 3x3 stem, three stages of n basic blocks at widths w, 2w, 4w,
then global pooling and a linear classifier. The blocks live in one flat list,
so families that run, skip or resize blocks index them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from trainer.switchable_bn import SwitchableBatchNorm2d
from trainer.torchvision_backbones import PREFIX, ResNetBlocks, torchvision_backbone

__all__ = ["BasicBlock", "CifarResNet", "ZeroPadShortcut", "cifar_resnet", "backbone_from_config", "DEPTHS", "SHORTCUTS"]

DEPTHS = (8, 14, 20, 32, 44, 56, 110)
# Where a block changes shape: "zero-pad" is He et al.'s parameter-free option A, as the
# official BlockDrop code builds it (average-pool by the stride, then zero channels), so a
# skipped downsampling block costs nothing; "projection" is option B, a strided 1x1 conv and BN.
SHORTCUTS = ("zero-pad", "projection")

NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: average-pool by the stride, then append zero channels. No weights, no MACs."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.stride or x.shape[-2] % self.stride:
            # The strided conv beside it rounds up, the pooling down: name the cause instead of a shape mismatch.
            raise ValueError(
                f"the zero-pad shortcut halves a {x.shape[-2]}x{x.shape[-1]} map: option A backbones need inputs "
                "whose sides are multiples of 4 (two downsamplings)"
            )
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    def __init__(
        self, in_planes: int, planes: int, stride: int, norm_layer: NormLayer, shortcut: str = "projection"
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = None  # where the shape changes: the shortcut that matches it
        if stride != 1 or in_planes != planes:
            if shortcut == "zero-pad":
                self.downsample = ZeroPadShortcut(in_planes, planes, stride)
            else:
                self.downsample = nn.Sequential(conv1x1(in_planes, planes, stride), norm_layer(planes))

    def shortcut(self, x: Tensor) -> Tensor:
        """The path a skipped block still takes: identity, or the downsampling shortcut."""
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int,
        *,
        width: int = 16,
        in_channels: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
        stem_norm_layer: NormLayer | None = None,
        shortcut: str = "projection",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. {DEPTHS}), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; choose from {list(SHORTCUTS)}")
        blocks_per_stage = (depth - 2) // 6
        self.in_channels = in_channels
        # Stem and head are modules of their own, so a split can export them alone.
        stem_norm = stem_norm_layer or norm_layer
        self.stem = nn.Sequential(conv3x3(in_channels, width), stem_norm(width), nn.ReLU(inplace=True))
        # Block indices of each stage; the first block of every stage after the first has stride 2.
        self.stages = tuple(range(s * blocks_per_stage, (s + 1) * blocks_per_stage) for s in range(3))
        blocks: list[nn.Module] = []
        in_planes = width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, norm_layer, shortcut))
                in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_planes, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def cifar_resnet(
    depth: int, *, num_classes: int, width: int = 16, bn_sets: int = 1, shortcut: str = "projection"
) -> CifarResNet:
    """A CIFAR ResNet whose BNs keep `bn_sets` switchable statistics sets (1: plain BN)."""
    norm_layer: NormLayer = nn.BatchNorm2d
    if bn_sets > 1:
        norm_layer = partial(SwitchableBatchNorm2d, num_sets=bn_sets)
    return CifarResNet(depth, num_classes, width=width, norm_layer=norm_layer, shortcut=shortcut)


def backbone_from_config(model: dict, *, bn_sets: int = 1, block_layout: bool = False) -> nn.Module:
    """The backbone a model config describes: a CIFAR ResNet, or a torchvision network ("torchvision:<name>").

    `block_layout`: a torchvision ResNet as stem, flat blocks and head (ResNetBlocks), for the families
    that skip blocks; the CIFAR ResNet is laid out so already. Configs from before `shortcut` existed
    used projections, and those from before `backbone` the CIFAR ResNet.
    """
    name = model.get("backbone", "cifar-resnet")
    if name.startswith(PREFIX):
        network = torchvision_backbone(name.removeprefix(PREFIX), num_classes=model["num_classes"], bn_sets=bn_sets)
        if not block_layout:
            return network
        if not isinstance(network, ResNet):
            raise ValueError(f"{name} has no residual blocks to run or skip; the block families take a ResNet")
        return ResNetBlocks(network)
    if name != "cifar-resnet":
        raise ValueError(f"unknown backbone {name!r}: 'cifar-resnet' or '{PREFIX}<name>'")
    return cifar_resnet(
        model["depth"], num_classes=model["num_classes"], width=model["width"],
        shortcut=model.get("shortcut", "projection"), bn_sets=bn_sets,
    )
