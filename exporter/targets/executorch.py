"""ExecuTorch target: ONE multi-method .pte, each graph a method, lowered to XNNPACK (fp32, or int8 by PT2E).

ExecuTorch stores delegate weights keyed by their sha256, so methods that
share conv weights store them once; BN stays a per-channel affine
(exporter/batchnorm.py) so that the conv weights are shared.

Each method takes 1 to `max_batch` samples. Memory planning sizes every
buffer from the example inputs, so the graphs are exported at `max_batch`
(exporter/targets/batch.py): exported at batch 1, a larger batch would fail
at run time with "Attempted to resize a bounded tensor". A batch above
`max_batch` is refused when the method's inputs are set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.backends.quiet import without_kernel_preference_notice

with without_kernel_preference_notice():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
from tqdm import tqdm

from exporter.batchnorm import batchnorm_to_affine
from exporter.graphs import ExportGraph
from exporter.quantize.pt2e import quantize_pt2e
from exporter.targets import Int8Inputs, Written
from exporter.targets.batch import batched_example
from runtime.format.devices import Device

PROGRAM_FILE = "model.pte"


def write(
    graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None, max_batch: int,
    precision: str = "fp32", int8: Int8Inputs | None = None,
) -> Written:
    """All graphs as the methods of one .pte; those named in `int8` quantized by PT2E, each on its own inputs."""
    int8 = int8 or {}
    programs = {
        graph.name: _quantized(graph, int8[graph.name], max_batch) if graph.name in int8 else _export(graph, max_batch)
        for graph in tqdm(graphs, desc="torch.export", leave=False, disable=None)
    }
    edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    (directory / PROGRAM_FILE).write_bytes(program.buffer)
    return Written({graph.name: (PROGRAM_FILE, graph.name) for graph in graphs})


def _export(graph: ExportGraph, max_batch: int) -> torch.export.ExportedProgram:
    inputs, dynamic_shapes = batched_example(graph, max_batch)
    return torch.export.export(batchnorm_to_affine(graph.module), inputs, dynamic_shapes=dynamic_shapes)


def _quantized(graph: ExportGraph, batches, max_batch: int) -> torch.export.ExportedProgram:
    return quantize_pt2e(graph, [tuple(torch.from_numpy(x) for x in batch) for batch in batches], max_batch=max_batch)
