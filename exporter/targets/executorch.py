"""ExecuTorch target: ONE multi-method .pte, each graph a method, lowered to XNNPACK.

ExecuTorch stores delegate weights keyed by their sha256, so methods that
share conv weights store them once; BN stays a per-channel affine
(exporter/batchnorm.py) so that the conv weights are shared.
"""

from __future__ import annotations

from pathlib import Path

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from tqdm import tqdm

from exporter.batchnorm import batchnorm_to_affine
from exporter.graphs import ExportGraph
from exporter.targets import Written
from runtime.devices import Device

PROGRAM_FILE = "model.pte"


def write(graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None) -> Written:
    programs = {
        graph.name: torch.export.export(batchnorm_to_affine(graph.module), graph.example_inputs)
        for graph in tqdm(graphs, desc="torch.export", leave=False, disable=None)
    }
    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    (directory / PROGRAM_FILE).write_bytes(program.buffer)
    return Written({graph.name: (PROGRAM_FILE, graph.name) for graph in graphs})
