"""Int8 quantization of one export graph for XNNPACK, by PT2E, calibrated on that graph's own inputs.

Each graph is quantized alone, not the network once: every resolution or
path of a dynamic network has its own BN set and input size, so its own
activation ranges, and each graph becomes one method of the program with
the ranges of the inputs it will see.

    program = quantize_pt2e(graph, [(images,)], max_batch=8)
    to_edge_transform_and_lower({graph.name: program, ...}, partitioner=[XnnpackPartitioner()])

Eval-mode BatchNorm is folded into the conv before it when the model is
prepared, so every graph quantizes its own folded conv weights. The fp32
path's shared-weight affine (exporter/batchnorm.py) must not be applied
first: it would stay a separate int8 mul and add after every conv, each one
more op and one more rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from exporter.graphs import ExportGraph
from exporter.targets.batch import batched_example
from runtime.backends.quiet import without_kernel_preference_notice

with without_kernel_preference_notice():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

__all__ = ["quantize_pt2e"]


def quantize_pt2e(
    graph: ExportGraph, calibration: Sequence[tuple[Tensor, ...]], *, max_batch: int
) -> torch.export.ExportedProgram:
    """`graph` quantized to int8 for XNNPACK by PT2E, calibrated on `calibration`, batch 1 to `max_batch`.

    `calibration` holds tuples of tensors in `graph.input_names` order, each
    of any batch size (larger batches run in chunks of `max_batch`). Weights
    are int8 per output channel, activations int8 per tensor. The result
    lowers with XnnpackPartitioner next to fp32 programs, as one method of
    the same program.
    """
    if graph.module.training:
        raise ValueError(f"graph {graph.name!r}: the module is in training mode; BN folds only in eval mode")
    inputs, dynamic_shapes = batched_example(graph, max_batch)
    batches = _calibration_batches(graph, calibration, max_batch)
    captured = torch.export.export(graph.module, inputs, dynamic_shapes=dynamic_shapes).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(captured, quantizer)  # folds each eval-mode BN into its conv, then adds observers
    with torch.no_grad():
        for batch in batches:
            prepared(*batch)
    quantized = convert_pt2e(prepared)
    return torch.export.export(quantized, inputs, dynamic_shapes=dynamic_shapes)


def _calibration_batches(
    graph: ExportGraph, calibration: Sequence[tuple[Tensor, ...]], max_batch: int
) -> list[tuple[Tensor, ...]]:
    """Every element of `calibration`, checked against `graph`'s inputs, in chunks of at most `max_batch` samples.

    The captured graph accepts only the exported batch range, 1 to `max_batch`.
    """
    if not calibration:
        raise ValueError(f"graph {graph.name!r}: calibration is empty; quantization needs inputs to measure ranges on")
    checked = [_checked_element(graph, index, element) for index, element in enumerate(calibration)]
    return [
        tuple(tensor[start : start + max_batch] for tensor in element)
        for element in checked
        for start in range(0, element[0].shape[0], max_batch)
    ]


def _checked_element(graph: ExportGraph, index: int, element: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """`element` if it is one batch of `graph`'s inputs: per-sample shapes as the examples', one batch size."""
    where = f"graph {graph.name!r}, calibration element {index}"
    if isinstance(element, Tensor) or len(element) != len(graph.input_names):
        raise ValueError(f"{where}: expected a tuple of tensors for the inputs {graph.input_names}")
    for name, tensor, example in zip(graph.input_names, element, graph.example_inputs):
        if tensor.dim() != example.dim() or tensor.shape[1:] != example.shape[1:]:
            expected = ", ".join(map(str, example.shape[1:]))
            raise ValueError(f"{where}: input {name!r} has shape {tuple(tensor.shape)}; expected (N, {expected})")
    batch_sizes = [tensor.shape[0] for tensor in element]
    if len(set(batch_sizes)) != 1 or batch_sizes[0] == 0:
        raise ValueError(f"{where}: batch sizes {batch_sizes} for {graph.input_names}; all inputs need the same N >= 1")
    return element
