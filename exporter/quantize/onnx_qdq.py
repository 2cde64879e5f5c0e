"""Int8 QDQ ONNX of one exported graph, its activation ranges calibrated on that graph's own inputs.

Calibration is per graph, not per network: each resolution, scale or path of a
dynamic network sees its own activation distribution (and DRNet/Resizable keep a
BN set per resolution for that reason), so one set of ranges for all of them
would clip some and waste int8 levels on others.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from exporter.graphs import ExportGraph

__all__ = ["quantize_qdq"]

# MinMax, measured against the alternatives on the demo DRNet's graphs: Entropy gave the very
# same ranges, Percentile (99.999) a larger largest logit error and no better top-1 agreement.
CALIBRATION_METHOD = CalibrationMethod.MinMax


def quantize_qdq(
    graph: ExportGraph,
    fp32: onnx.ModelProto,
    calibration: Sequence[tuple[np.ndarray, ...]],
    *,
    symmetric_activations: bool = False,
) -> onnx.ModelProto:
    """`fp32`, the ONNX export of `graph` with its BN kept, as int8 QDQ, activation ranges calibrated on `calibration`.

    Each element of `calibration` is one batch: an array per input of `graph`,
    in `graph.input_names` order, with the per-sample shape of the graph's
    example inputs and any batch size. Weights are int8, symmetric, one scale
    per output channel, with every BatchNorm folded into the conv before it
    (each BN set thus into its own weights). Activations are uint8 with a
    zero point, the weights then in 7 bits: onnxruntime's uint8 x int8 kernels
    on x86 CPUs without VNNI (AVX2; AMD EPYC here) saturate with 8-bit
    weights, 0.58 of a logit off the QDQ graph's own arithmetic on a small CNN,
    against none with 7 (tests/test_quantize_onnx.py). With
    `symmetric_activations`, activations are int8 with zero point 0 and
    weights 8-bit, as TensorRT, which has no such kernels, requires. The model keeps the dynamic `batch` axis of `fp32`
    (exporter.targets.onnx.export_onnx) and holds its weights inline.
    """
    batches = _checked_calibration(graph, calibration)
    # BN folds in ONNX, not in torch: export_onnx's dynamo exporter runs onnxscript's optimizer, whose
    # fuse_batchnorm rule folds each BatchNormalization into its conv, whatever module (plain or
    # switchable BN) produced it; a torch-side fuse would need each network's conv/BN pairs by name.
    with tempfile.TemporaryDirectory(prefix="onnx-qdq-") as scratch:
        exported, prepared, quantized = (Path(scratch) / f"{stage}.onnx" for stage in ("fp32", "prepared", "int8"))
        onnx.save(fp32, exported)
        # onnxruntime's recommended preparation (shapes, basic graph optimizations); its symbolic
        # shape inference, meant for transformers, is skipped: it fails on some exporter Constants.
        quant_pre_process(exported, prepared, skip_symbolic_shape=True)
        leftover = [node.name for node in onnx.load(prepared).graph.node if node.op_type == "BatchNormalization"]
        if leftover:
            raise ValueError(f"graph {graph.name!r}: BatchNormalization nodes {leftover} follow no conv to fold into")
        quantize_static(
            prepared,
            quantized,
            _BatchReader(graph.input_names, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHOD,
            reduce_range=not symmetric_activations,
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
        )
        model = onnx.load(quantized)
    onnx.checker.check_model(model, full_check=True)
    return model


class _BatchReader(CalibrationDataReader):
    """Feeds onnxruntime's calibrator one batch at a time, as {input name: array}."""

    def __init__(self, input_names: Sequence[str], batches: Sequence[tuple[np.ndarray, ...]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = (dict(zip(input_names, batch)) for batch in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _checked_calibration(
    graph: ExportGraph, calibration: Sequence[tuple[np.ndarray, ...]]
) -> list[tuple[np.ndarray, ...]]:
    """`calibration` as contiguous arrays of the graph's input dtypes, or ValueError naming what does not fit."""
    if len(calibration) == 0:
        raise ValueError(f"graph {graph.name!r}: calibration is empty; int8 ranges need at least one batch")
    batches = []
    for index, batch in enumerate(calibration):
        if len(batch) != len(graph.input_names):
            raise ValueError(
                f"graph {graph.name!r}: calibration batch {index} has {len(batch)} arrays "
                f"for the inputs {graph.input_names}"
            )
        arrays = []
        for name, example, array in zip(graph.input_names, graph.example_inputs, batch):
            sample_shape = tuple(example.shape[1:])
            if np.ndim(array) != example.dim() or np.shape(array)[1:] != sample_shape:
                raise ValueError(
                    f"graph {graph.name!r}: calibration batch {index} gives input {name!r} shape "
                    f"{np.shape(array)}; expected (batch, {', '.join(map(str, sample_shape))})"
                )
            arrays.append(np.ascontiguousarray(array, dtype=torch.empty(0, dtype=example.dtype).numpy().dtype))
        batches.append(tuple(arrays))
    return batches
