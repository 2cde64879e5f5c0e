"""What a family's split hands the targets: static graphs plus the rule that dispatches them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from runtime.format.fields import TensorSpec
from runtime.rules import Section
from trainer.dynamic import DynamicOutput

__all__ = ["ExportGraph", "Split", "SplitOptions", "UnsplittableModel", "tensor_specs"]


class UnsplittableModel(ValueError):
    """The exporter has no split for this model."""


@dataclass(frozen=True)
class SplitOptions:
    """What the user asked of a split: what every split reads, and the family's own options."""

    resolution: int  # input side of every graph
    calibration: Tensor | None = None  # normalized images driving the block families' plan
    checkpoint: Path | None = None  # where the model came from: its companions (a lookup table) lie beside it
    family: Any = None  # the family split's EXPORT_OPTIONS instance, or None where it takes none
    target: str | None = None  # the target the graphs are written for, where a split's choice depends on it
    precision: str | None = None  # the bundle's precision (fp32, fp16, int8), likewise


@dataclass(frozen=True)
class ExportGraph:
    name: str
    module: nn.Module  # eval mode, static control flow, BN set already chosen
    example_inputs: tuple[Tensor, ...]  # batch 1; the targets export a dynamic batch from it
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    macs: int


@dataclass(frozen=True)
class Split:
    graphs: tuple[ExportGraph, ...]
    dispatch: Section
    # What the bundle must reproduce, per (normalized images, scale): the model's own
    # inference, with any approximation the plan made (blocks left out) applied.
    reference: Callable[[Tensor, float | None], DynamicOutput]
    scales: tuple[float | None, ...] = (None,)  # operating points to verify
    # Where every path can be forced (Session.run(path=...)): what forcing it must give, per (images, path name).
    path_reference: Callable[[Tensor, str], DynamicOutput] | None = None


@torch.no_grad()
def tensor_specs(graph: ExportGraph) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Per-sample input and output specs of `graph` (the batch dimension dropped), read off one eager run."""
    outputs = graph.module(*graph.example_inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if len(outputs) != len(graph.output_names):
        raise ValueError(f"graph {graph.name!r} returns {len(outputs)} tensors for {graph.output_names}")

    def specs(names, tensors):
        return tuple(TensorSpec(n, tuple(t.shape[1:]), str(t.dtype).removeprefix("torch.")) for n, t in zip(names, tensors))

    return specs(graph.input_names, graph.example_inputs), specs(graph.output_names, outputs)
