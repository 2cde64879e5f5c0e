"""ONNX target: one .onnx per graph, batch axis `batch` from 1 to max_batch, checked by onnx.checker.

The graphs of one bundle repeat each other's weights: a block graph holds the
same convolutions as the full model, a cached path the same as its blocks, a
resolution the same as the others but for its BN set. So BN stays a
per-channel affine (exporter/batchnorm.py; onnxruntime fuses it back into the
conv at load), every sizeable initializer moves into one shared external-data
file, each distinct tensor stored once, and the .onnx files keep only their
structure. onnxruntime resolves the file relative to each .onnx, as the ONNX
external-data convention specifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch
from onnx.external_data_helper import set_external_data
from tqdm import tqdm

from exporter.batchnorm import batchnorm_to_affine
from exporter.graphs import ExportGraph
from exporter.quantize.onnx_qdq import quantize_qdq
from exporter.targets import Int8Inputs, Written
from exporter.targets.batch import batched_example
from runtime.format.devices import Device

__all__ = ["OPSET", "WEIGHTS_FILE", "export_onnx", "store_weights_once", "write"]

OPSET = 18
WEIGHTS_FILE = "weights.bin"
EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay inline, as in onnx's own external-data conversion
ALIGNMENT = 64  # each tensor starts on a 64-byte boundary of the shared file


def export_onnx(graph: ExportGraph, *, max_batch: int) -> onnx.ModelProto:
    """`graph` as checked ONNX whose inputs and outputs share a symbolic first axis `batch` (1..max_batch).

    ONNX cannot bound a dim, so the range lives in the manifest; with
    `max_batch` 1 the axis is a static 1.
    """
    inputs, dynamic_shapes = batched_example(graph, max_batch)
    with warnings.catch_warnings():
        # The dynamo exporter narrates its progress through warnings and prints.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph.module,
            inputs,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    model = program.model_proto
    for node in model.graph.node:
        # Provenance: the exporting machine's stack traces and module paths, as large as
        # the graph itself and of no use to a runtime.
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    onnx.checker.check_model(model, full_check=True)
    return model


def store_weights_once(models: Mapping[str, onnx.ModelProto], weights: Path) -> None:
    """Move the initializers of `models` of at least 1 KiB into the file `weights`, each distinct tensor once.

    Tensors are matched by content (type, shape and bytes), not by name: the
    exporter names a weight after its module path, which differs between a
    block graph and the full model. If no tensor is that large, no file is written.
    """
    offsets: dict[bytes, int] = {}
    with open(weights, "wb") as stream:
        for model in models.values():
            for tensor in model.graph.initializer:
                data = tensor.raw_data
                if len(data) < EXTERNAL_THRESHOLD:
                    continue
                key = hashlib.sha256(repr((tensor.data_type, tuple(tensor.dims))).encode() + data).digest()
                if key not in offsets:
                    stream.write(b"\0" * (-stream.tell() % ALIGNMENT))
                    offsets[key] = stream.tell()
                    stream.write(data)
                set_external_data(tensor, location=weights.name, offset=offsets[key], length=len(data))
                tensor.ClearField("raw_data")
    if not offsets:
        weights.unlink()


def write(
    graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None, max_batch: int,
    precision: str = "fp32", int8: Int8Inputs | None = None,
) -> Written:
    """One .onnx per graph taking 1 to `max_batch` samples, their large weights in one shared weights.bin.

    The graphs named in `int8` become static QDQ int8, each calibrated on its
    own routed inputs (exporter/quantize/onnx_qdq.py); their BN folds into
    their convolutions, so they share no weights with the others.
    """
    int8 = int8 or {}
    models = {
        graph.name: quantize_qdq(graph, export_onnx(graph, max_batch=max_batch), int8[graph.name]) if graph.name in int8
        else export_onnx(dataclasses.replace(graph, module=batchnorm_to_affine(graph.module)), max_batch=max_batch)
        for graph in tqdm(graphs, desc="onnx graphs", leave=False, disable=None)
    }
    store_weights_once(models, directory / WEIGHTS_FILE)
    placement = {}
    for name, model in models.items():
        file = f"{name}.onnx"
        onnx.save(model, str(directory / file))
        onnx.checker.check_model(str(directory / file), full_check=True)
        placement[name] = (file, None)
    return Written(placement)
