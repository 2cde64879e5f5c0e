"""The batch dimension every target exports: axis 0 of every input, any size from 1 to `max_batch`.

A split's graphs carry batch-1 example inputs. Each target exports them at
`max_batch` samples with axis 0 marked dynamic, one `torch.export.Dim` shared
by all inputs of a graph, so that the exporter proves they batch together.
Exporting at the largest batch matters for ExecuTorch, whose memory planning
sizes every buffer from the example; the other targets do not mind.

    inputs, dynamic_shapes = batched_example(graph, max_batch=8)
    torch.export.export(graph.module, inputs, dynamic_shapes=dynamic_shapes)
"""

from __future__ import annotations

from torch import Tensor
from torch.export import Dim

from exporter.graphs import ExportGraph

__all__ = ["BATCH", "batched_example", "check_max_batch"]

BATCH = "batch"  # the dynamic axis' name, which the ONNX graphs keep as their dim_param

DynamicShapes = tuple[dict[int, Dim], ...]


def check_max_batch(max_batch: int) -> int:
    """`max_batch`, or ValueError if it is not a positive int."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    return max_batch


def batched_example(graph: ExportGraph, max_batch: int) -> tuple[tuple[Tensor, ...], DynamicShapes | None]:
    """`graph`'s example inputs repeated to `max_batch` samples, and the dynamic shapes that batch them.

    With `max_batch` 1 the inputs stay as they are and the shapes static (None).
    torch.export accepts a lower bound of 1 for a dimension whose example is
    larger (checked on torch 2.14), so batch 1 is inside the exported range.
    """
    check_max_batch(max_batch)
    for name, x in zip(graph.input_names, graph.example_inputs):
        if x.dim() == 0 or x.shape[0] != 1:
            raise ValueError(
                f"graph {graph.name!r}: example input {name!r} has shape {tuple(x.shape)}; "
                "every example input needs a leading batch axis of size 1"
            )
    if max_batch == 1:
        return graph.example_inputs, None
    batch = Dim(BATCH, min=1, max=max_batch)
    inputs = tuple(x.expand(max_batch, *x.shape[1:]).contiguous() for x in graph.example_inputs)
    return inputs, tuple({0: batch} for _ in inputs)
