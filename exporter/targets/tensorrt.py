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

Int8 is explicit quantization: each int8 graph is a QDQ network carrying its
own scales, calibrated on the inputs the dispatch routes to it, which TensorRT
10 builds without a calibrator (its implicit, calibrator-driven int8 is
deprecated, and feeds every graph the same images).

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
from onnx import numpy_helper
from tqdm import tqdm

from exporter.graphs import ExportGraph
from exporter.quantize.onnx_qdq import quantize_qdq
from exporter.targets import Int8Inputs, Written
from exporter.targets.batch import batched_example, check_max_batch
from exporter.targets.onnx import compose_if_chain, export_onnx, if_chain
from runtime.format.devices import Device
from runtime.format.manifest import BuildPlan, EngineProfile

__all__ = [
    "SUPPORTED_OPS",
    "OPSETS",
    "write",
    "prepare",
    "check_for_tensorrt",
    "shape_variants",
    "merge_shape_variants",
]

# The ONNX operators TensorRT 10's parser supports: the "Y" rows of onnx-tensorrt's
# support matrix, docs/operators.md at the ONNX-TensorRT 10.1 GA release (commit 96e7811,
# https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md). Per-op restrictions
# live in that table; those our graphs can meet (Resize antialiasing, symmetric int8 Q/DQ) are checked below.
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


def write(
    graphs: tuple[ExportGraph, ...],
    directory: Path,
    *,
    device: Device | None = None,
    max_batch: int,
    precision: str = DEFAULT_PRECISION,
    int8: Int8Inputs | None = None,
) -> Written:
    """One prepared .onnx per network and the build plan for `device` (default: 1 GiB workspace).

    The graphs named in `int8` become QDQ networks with symmetric int8
    activations, each calibrated on its own routed inputs; the device builds
    them int8 and the others in `precision`, fp16 where that is int8.
    Graphs that are one network at several input shapes share one artifact
    (see `shape_variants`): a QDQ graph holds its own folded weights and
    scales, so it shares one only with an identical QDQ graph.
    """
    int8 = int8 or {}
    if precision == "int8" and not int8:
        raise ValueError("an int8 TensorRT plan needs at least one graph to quantize; name them in int8=")
    workspace = device.workspace_mb if device and device.workspace_mb else DEFAULT_WORKSPACE_MB
    opt_batch = _opt_batch(device, max_batch)
    exported = {}
    for graph in tqdm(graphs, desc="tensorrt graphs", leave=False, disable=None):
        if if_chain(graph) is None:
            exported[graph.name] = (_qdq(graph, int8[graph.name], max_batch) if graph.name in int8
                                    else export_onnx(graph, max_batch=max_batch))
    for graph in graphs:  # a conditional graph, composed of the others' ONNX: its Ifs become IIfConditional
        if (chain := if_chain(graph)) is not None:
            exported[graph.name] = compose_if_chain(chain, exported)
    models = {graph.name: prepare(graph.name, exported[graph.name], batched_example(graph, max_batch)[0])
              for graph in graphs}
    placement = {}
    for group in shape_variants(models):
        file = f"{'+'.join(group)}.onnx"
        model = models[group[0]] if len(group) == 1 else merge_shape_variants([models[name] for name in group])
        onnx.save(model, str(directory / file))
        onnx.checker.check_model(str(directory / file), full_check=True)
        placement.update({name: (file, None) for name in group})
    plan = BuildPlan(
        precision=precision,
        workspace_mb=workspace,
        profiles={graph.name: _profiles(graph, opt_batch, max_batch) for graph in graphs},
    )
    return Written(placement, build=plan)


def _qdq(graph: ExportGraph, calibration: Sequence[tuple[np.ndarray, ...]], max_batch: int) -> onnx.ModelProto:
    """`graph` as the explicitly quantized network TensorRT builds int8: symmetric QDQ, float biases."""
    model = quantize_qdq(graph, export_onnx(graph, max_batch=max_batch), calibration, symmetric_activations=True)
    return _float_biases(model)


def _float_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each DequantizeLinear of an int32 bias replaced by the float bias it computes.

    onnxruntime's quantizer stores conv and gemm biases as int32 behind a
    DequantizeLinear, but TensorRT dequantizes int8, fp8 and int4 only (the
    parser's support matrix) and adds biases in float itself. The values are
    what onnxruntime computes, (q - zero point) * scale in float32.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    kept, orphans = [], set()
    for node in graph.node:
        bias = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if bias is None or bias.data_type != onnx.TensorProto.INT32 or len(bias.dims) != 1:
            kept.append(node)
            continue
        q, scale, *zero = (numpy_helper.to_array(initializers[name]) for name in node.input if name)
        value = (q - (zero[0] if zero else 0)).astype(np.float32) * scale
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        orphans.update(node.input)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name in orphans - used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return model


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
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
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
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_symmetric_int8(name, node, initializers)


def _check_symmetric_int8(name: str, node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> None:
    """Raise ValueError unless Q/DQ `node` has an int8 zero point of 0, the only quantization TensorRT runs.

    ONNX gives the quantized tensor its zero point's type, so this also
    refuses what TensorRT cannot dequantize: uint8, or a quantized bias's int32.
    """
    zero = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero is None or zero.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(zero).any():
        kind = "none" if zero is None else f"{onnx.TensorProto.DataType.Name(zero.data_type).lower()} {zero.name!r}"
        raise ValueError(
            f"graph {name!r}: node {node.name!r} ({node.op_type}) has zero point {kind}; TensorRT quantizes to "
            "int8 with zero point 0 (an initializer) only"
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
