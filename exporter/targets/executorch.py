"""ExecuTorch target: ONE multi-method .pte, each graph a method, lowered to XNNPACK.

ExecuTorch stores delegate weights keyed by their sha256, so methods that
share conv weights store them once. Folding BN into the conv weights would
make every resolution's weights distinct; instead each BN becomes a
per-channel affine after its conv, and only those small vectors differ.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from torch import Tensor, nn
from tqdm import tqdm

from exporter.graphs import ExportGraph
from exporter.targets import Written
from runtime.devices import Device

PROGRAM_FILE = "model.pte"


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
    converted = copy.deepcopy(module)
    for parent in list(converted.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, ChannelAffine(child))
    return converted.eval()


def write(graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None) -> Written:
    programs = {
        graph.name: torch.export.export(batchnorm_to_affine(graph.module), graph.example_inputs)
        for graph in tqdm(graphs, desc="torch.export", leave=False, disable=None)
    }
    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    (directory / PROGRAM_FILE).write_bytes(program.buffer)
    return Written({graph.name: (PROGRAM_FILE, graph.name) for graph in graphs})
