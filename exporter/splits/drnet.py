"""DRNet's split: the resolution predictor, and one static backbone per candidate resolution.

Every graph takes the normalized image at the base resolution and resizes
inside, so the runtime hands all of them the same tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from exporter.graphs import ExportGraph, Split, SplitOptions
from runtime.rules.argmax import ArgmaxDispatch, ArgmaxPath
from trainer.dynamic import resize
from trainer.families.drnet import DRNet
from trainer.switchable_bn import freeze_bn_set


class Resized(nn.Module):
    """`network` applied to its input resized to `size`."""

    def __init__(self, network: nn.Module, size: int) -> None:
        super().__init__()
        self.network = network
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return self.network(resize(x, self.size))


def split(model: DRNet, options: SplitOptions) -> Split:
    image = torch.zeros(1, model.backbone.in_channels, options.resolution, options.resolution)
    predictor = ExportGraph(
        "predictor",
        Resized(model.predictor, model.options.predictor_resolution).eval(),
        (image,), ("image",), ("scores",), model.predictor_macs,
    )
    paths, graphs = [], [predictor]
    for index, size in enumerate(model.resolutions):
        name = model.path_name(index)
        backbone = Resized(freeze_bn_set(model.backbone, index), size).eval()
        graphs.append(ExportGraph(name, backbone, (image,), ("image",), ("logits",), model.backbone_macs[index]))
        paths.append(ArgmaxPath(name=name, graph=name, resolution=size))
    reference = max(paths, key=lambda p: p.resolution).graph
    dispatch = ArgmaxDispatch("predictor", tuple(paths), reference)
    return Split(tuple(graphs), dispatch, lambda x, _: model.infer(x))
