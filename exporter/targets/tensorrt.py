"""TensorRT target: ONNX prepared for TensorRT's parser, plus the plan the device builds engines from.

An engine holds kernels chosen for one GPU by one TensorRT version, so a
bundle cannot carry one. It carries ONNX and a `BuildPlan` (precision,
workspace, one optimization profile per graph input), and the device builds
and caches its engines at first load (runtime/backends/tensorrt.py). What can
be checked before the device is checked here, so that a bundle that exports
also parses there: the opset, static shapes but for the batch axis, and every
op against the ops TensorRT's ONNX parser supports.

Every input's first axis is the batch, 1 to `max_batch`; its profile is
min 1, opt the device's `opt_batch` (default 1), max `max_batch`, so the
builder tunes its kernels for the batch the device usually runs.

    from exporter import export
    report = export("runs/drnet-digits", "tensorrt", "bundles/drnet-trt")
    report.manifest.build   # BuildPlan(precision='fp16', workspace_mb=1024, ...)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
from tqdm import tqdm

from exporter.graphs import ExportGraph
from exporter.targets import Written
from exporter.targets.batch import batched_example, check_max_batch
from exporter.targets.onnx import export_onnx
from runtime.devices import Device
from runtime.manifest import BuildPlan, EngineProfile

__all__ = [
    "SUPPORTED_OPS",
    "OPSETS",
    "CALIBRATION_FILE",
    "write",
    "prepare",
    "check_for_tensorrt",
    "shape_variants",
    "merge_shape_variants",
]

# The ONNX operators TensorRT 10's parser supports: the "Y" rows of onnx-tensorrt's
# support matrix, docs/operators.md at the ONNX-TensorRT 10.1 GA release (commit 96e7811,
# https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md). Per-op restrictions
# live in that table; the one our graphs can meet (Resize antialiasing) is checked below.
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "GRU", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual",
    "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool",
    "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
    "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN",
    "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile",
    "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})  # fmt: skip
# The same page: "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20".
# Of those this target accepts 17 and later; the ONNX target it reuses emits 18.
OPSETS = range(17, 21)
ONNX_DOMAINS = ("", "ai.onnx")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MB = 1024
CALIBRATION_FILE = "calibration.npy"


def write(
    graphs: tuple[ExportGraph, ...],
    directory: Path,
    *,
    device: Device | None = None,
    max_batch: int,
    calibration=None,
) -> Written:
    """One prepared .onnx per network and the build plan for `device` (default: fp16, 1 GiB workspace).

    `calibration` (normalized float32 NCHW images, an array or a CPU tensor)
    is required for an int8 device and stored as calibration.npy for the
    device's INT8 calibrator. TensorRT calibrates at the opt shapes of its
    calibration profile, so the calibrator feeds whole batches of `opt_batch`
    images and leaves out the remainder.
    Graphs that are one network at several input shapes share one artifact
    (see `shape_variants`).
    """
    precision = device.precision if device else DEFAULT_PRECISION
    workspace = device.workspace_mb if device and device.workspace_mb else DEFAULT_WORKSPACE_MB
    opt_batch = _opt_batch(device, max_batch)
    images = _calibration_images(calibration, graphs, opt_batch) if precision == "int8" else None
    models = {}
    for graph in tqdm(graphs, desc="tensorrt graphs", leave=False, disable=None):
        inputs, _ = batched_example(graph, max_batch)
        models[graph.name] = prepare(graph.name, export_onnx(graph, max_batch=max_batch), inputs)
    placement = {}
    for group in shape_variants(models):
        file = f"{'+'.join(group)}.onnx"
        model = models[group[0]] if len(group) == 1 else merge_shape_variants([models[name] for name in group])
        onnx.save(model, str(directory / file))
        onnx.checker.check_model(str(directory / file), full_check=True)
        placement.update({name: (file, None) for name in group})
    if images is not None:
        np.save(directory / CALIBRATION_FILE, images)
    plan = BuildPlan(
        precision=precision,
        workspace_mb=workspace,
        calibration=CALIBRATION_FILE if images is not None else None,
        profiles={graph.name: _profiles(graph, opt_batch, max_batch) for graph in graphs},
    )
    return Written(placement, build=plan)


def _opt_batch(device: Device | None, max_batch: int) -> int:
    """The batch the device's engines are tuned for: its `opt_batch`, 1 for a device without one."""
    check_max_batch(max_batch)
    opt_batch = device.opt_batch if device else 1
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"device {device.name!r}: opt_batch {opt_batch} is outside 1..max_batch ({max_batch})")
    return opt_batch


def _profiles(graph: ExportGraph, opt_batch: int, max_batch: int) -> tuple[EngineProfile, ...]:
    """Per input: its per-sample shape at batch 1, `opt_batch` and `max_batch`."""
    return tuple(
        EngineProfile(name, (1, *x.shape[1:]), (opt_batch, *x.shape[1:]), (max_batch, *x.shape[1:]))
        for name, x in zip(graph.input_names, graph.example_inputs)
    )


def prepare(name: str, model: onnx.ModelProto, example_inputs: Sequence) -> onnx.ModelProto:
    """`model` with inferred shapes and folded constants, checked for TensorRT.

    The optimized graph replaces the exported one only if it computes
    bit-identical outputs on `example_inputs` (batched like the export); otherwise
    the export, which parity verification vouches for, is kept as it is.
    """
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    optimized = onnxscript.optimizer.optimize(model)
    feeds = {value.name: np.asarray(x, dtype=np.float32) for value, x in zip(model.graph.input, example_inputs)}
    if all(np.array_equal(a, b) for a, b in zip(_run(model, feeds), _run(optimized, feeds), strict=True)):
        model = optimized
    check_for_tensorrt(name, model)
    return model


def check_for_tensorrt(name: str, model: onnx.ModelProto) -> None:
    """Raise ValueError naming graph `name` if TensorRT 10 cannot take `model` as it is.

    Every dim must be static and positive but the first, the batch, which may
    be symbolic: the build plan's profiles give its range.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), None)
    if opset not in OPSETS:
        raise ValueError(
            f"graph {name!r}: opset {opset} is outside {OPSETS.start}..{OPSETS.stop - 1}, the opsets TensorRT 10 parses"
        )
    for value in (*model.graph.input, *model.graph.output):
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        if not tensor.HasField("shape") or not all(_allowed_dim(axis, d) for axis, d in enumerate(dims)):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise ValueError(
                f"graph {name!r}: tensor {value.name!r} has shape {shape if tensor.HasField('shape') else 'unknown'}; "
                "TensorRT bundles need static positive dims, but for a symbolic batch (first) axis"
            )
    for node in _nodes(model.graph):
        if node.domain not in ONNX_DOMAINS or node.op_type not in SUPPORTED_OPS:
            op = node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}::{node.op_type}"
            raise ValueError(
                f"graph {name!r}: node {node.name!r} is op {op!r}, which TensorRT 10's ONNX parser does not support "
                "(see onnx-tensorrt docs/operators.md); change the model so it exports without it"
            )
        antialias = next((a.i for a in node.attribute if a.name == "antialias"), 0)
        if node.op_type == "Resize" and antialias:
            raise ValueError(
                f"graph {name!r}: node {node.name!r} resizes with antialiasing, which TensorRT does not support"
            )


def _allowed_dim(axis: int, dim: onnx.TensorShapeProto.Dimension) -> bool:
    """A static positive dim, or a symbolic batch axis (the first)."""
    return (dim.HasField("dim_value") and dim.dim_value > 0) or (axis == 0 and bool(dim.dim_param))


def shape_variants(models: dict[str, onnx.ModelProto]) -> list[tuple[str, ...]]:
    """Graph names grouped by network: same nodes, weights and opsets, whatever their input shapes.

    Every graph is in exactly one group, in `models` order. A group of several
    is one network exported at several shapes (or twice at one), which one
    engine with a profile per shape serves, its weights stored once.
    """
    groups: dict[bytes, list[str]] = {}
    for name, model in models.items():
        groups.setdefault(_network_fingerprint(model), []).append(name)
    return [tuple(names) for names in groups.values()]


def merge_shape_variants(models: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """One model for networks `shape_variants` grouped: the dims that differ between them become symbolic."""
    merged = onnx.ModelProto()
    merged.CopyFrom(models[0])
    del merged.graph.value_info[:]  # intermediate shapes of the first variant only

    def boundary(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
        return [*model.graph.input, *model.graph.output]

    for index, value in enumerate(boundary(merged)):
        shapes = [[d.dim_value for d in boundary(m)[index].type.tensor_type.shape.dim] for m in models]
        for axis, sizes in enumerate(zip(*shapes)):
            if len(set(sizes)) > 1:
                dim = value.type.tensor_type.shape.dim[axis]
                dim.Clear()
                dim.dim_param = f"{value.name}_{axis}"
    return onnx.shape_inference.infer_shapes(merged, check_type=True, strict_mode=True)


def _network_fingerprint(model: onnx.ModelProto) -> bytes:
    """sha256 of everything that defines the network except the shapes of its inputs and outputs."""
    digest = hashlib.sha256()
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(repr(opset).encode())
    for value in (*model.graph.input, *model.graph.output):
        digest.update(repr((value.name, value.type.tensor_type.elem_type, len(value.type.tensor_type.shape.dim))).encode())
    for tensor in model.graph.initializer:
        digest.update(repr((tensor.name, tensor.data_type, tuple(tensor.dims))).encode())
        digest.update(onnx.numpy_helper.to_array(tensor).tobytes())
    for node in model.graph.node:
        bare = onnx.NodeProto()
        bare.CopyFrom(node)
        for field in ("name", "doc_string", "metadata_props"):  # provenance, not computation
            bare.ClearField(field)
        digest.update(bare.SerializeToString(deterministic=True))
    for function in model.functions:
        digest.update(function.SerializeToString(deterministic=True))
    return digest.digest()


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those in the subgraphs of If, Loop and Scan."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _nodes(subgraph)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """`model` on `feeds` as written: onnxruntime's own graph rewrites are off, so graphs compare fairly."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _calibration_images(calibration, graphs: tuple[ExportGraph, ...], opt_batch: int) -> np.ndarray:
    """`calibration` as float32 NCHW, after checking that every graph takes such images, `opt_batch` at a time.

    TensorRT's INT8 calibrator feeds the same images to every graph, so a graph
    whose input is not the image (a block graph taking features) cannot be
    calibrated from them.
    """
    if calibration is None:
        raise ValueError(
            "int8 TensorRT engines need calibration images: pass calibration= (normalized float32 NCHW), "
            "or export for an fp16 device"
        )
    images = np.ascontiguousarray(np.asarray(calibration, dtype=np.float32))
    if images.ndim != 4 or len(images) < opt_batch:
        raise ValueError(
            f"calibration must be an NCHW batch of at least opt_batch ({opt_batch}) images, got shape {images.shape}"
        )
    image = (1, *images.shape[1:])
    for graph in graphs:
        for name, x in zip(graph.input_names, graph.example_inputs):
            if tuple(x.shape) != image:
                raise ValueError(
                    f"int8 calibration feeds images of shape {image} to every graph, but graph {graph.name!r} "
                    f"takes {name!r} of shape {tuple(x.shape)}; export this model for an fp16 device"
                )
    return images
