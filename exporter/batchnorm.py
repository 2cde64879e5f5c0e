"""BatchNorm as an explicit per-channel affine, so that graphs differing only in BN share conv weights.

Export pipelines fold an eval-mode BN into the conv before it. For a network
with one BN set per resolution or scale, that makes every set's conv weights
distinct, and a bundle then stores the convolutions once per set. Kept as
`x * scale + shift` after the conv, only those small vectors differ.
onnxruntime fuses the affine back into the conv when it loads the graph;
XNNPACK (executorch 1.5.1) does not, and runs it as a Multiply and an Add:
about a tenth of the kernel time of the digits DRNet's paths, as
`python -m runtime.profile ops` shows.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["ChannelAffine", "batchnorm_to_affine"]


class ChannelAffine(nn.Module):
    """An eval-mode BatchNorm2d as x * scale + shift."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        self.register_buffer("scale", scale.view(1, -1, 1, 1).clone())
        self.register_buffer("shift", (bn.bias.detach() - bn.running_mean * scale).view(1, -1, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def batchnorm_to_affine(module: nn.Module) -> nn.Module:
    """A copy of `module` in eval mode with every BatchNorm2d replaced by its ChannelAffine."""
    converted = copy.deepcopy(module)
    for parent in list(converted.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, ChannelAffine(child))
    return converted.eval()
