"""ONNX target: one self-contained .onnx per graph, static batch-1 shapes, checked by onnx.checker."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from exporter.graphs import ExportGraph
from exporter.targets import Written
from runtime.devices import Device

OPSET = 18


def export_onnx(graph: ExportGraph, path: Path) -> None:
    with warnings.catch_warnings():
        # The dynamo exporter narrates its progress through warnings and prints.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph.module,
            graph.example_inputs,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def write(graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None) -> Written:
    placement = {}
    for graph in tqdm(graphs, desc="onnx graphs", leave=False, disable=None):
        file = f"{graph.name}.onnx"
        export_onnx(graph, directory / file)
        placement[graph.name] = (file, None)
    return Written(placement)
