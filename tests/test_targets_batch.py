"""Bundle format v3: every target's graphs take any batch from 1 to max_batch.

Tiny modules, each written once per target with max_batch 8, then run
directly on the artifact (onnxruntime, the ExecuTorch runtime) at batches
1, 3 and 8 against eager PyTorch. TensorRT's batching lives in its build plan
and its ONNX, Core ML's in the converted spec (it predicts only on macOS).
"""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from executorch.runtime import Runtime
from onnx import TensorProto, helper
from torch import Tensor, nn

from exporter.graphs import ExportGraph
from exporter.targets import executorch as et_target
from exporter.targets import onnx as onnx_target
from exporter.targets import tensorrt as trt_target
from exporter.targets.batch import batched_example
from runtime.format.devices import Device, get_device
from runtime.format.manifest import EngineProfile

MAX_BATCH = 8
BATCHES = (1, 3, MAX_BATCH)
ATOL = 1e-5


def trained_bn(channels: int) -> nn.BatchNorm2d:
    """A BN with non-trivial statistics, so that exporting it as an affine is exercised."""
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.2, 0.2)
    return bn


class Gated(nn.Module):
    """Like URNet's block graphs: (features, scale) to (next features, next gate logit), one S per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.gate = nn.Conv2d(4, 4, 3, padding=1), trained_bn(4), nn.Linear(5, 1)

    def forward(self, x: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.relu(self.bn(self.conv(x)))
        features = torch.cat([x.mean(dim=(2, 3)), scale.view(-1, 1)], dim=1)
        return x, self.gate(features).squeeze(1) + scale


def graphs() -> tuple[ExportGraph, ...]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), trained_bn(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    return (
        ExportGraph("net", net.eval(), (torch.randn(1, 3, 8, 8),), ("image",), ("logits",), 0),
        ExportGraph("gated", Gated().eval(), (torch.randn(1, 4, 6, 6), torch.ones(1)), ("features", "scale"),
                    ("next_features", "gate"), 0),
    )  # fmt: skip


def batch_of(graph: ExportGraph, n: int) -> tuple[Tensor, ...]:
    """`n` distinct samples for `graph`."""
    generator = torch.Generator().manual_seed(n)
    return tuple(torch.randn(n, *x.shape[1:], generator=generator) for x in graph.example_inputs)


def batching_device(opt_batch: int) -> Device:
    return dataclasses.replace(get_device("jetson-orin-nano"), opt_batch=opt_batch)


# --- artifacts run at every batch ----------------------------------------------------------------


def onnx_runner(directory, graph):
    session = ort.InferenceSession(str(directory / f"{graph.name}.onnx"), providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(None, {name: x.numpy() for name, x in zip(graph.input_names, inputs)})


def executorch_runner(directory, graph):
    method = Runtime.get().load_program(directory / "model.pte").load_method(graph.name)
    return lambda inputs: [out.numpy() for out in method.execute(list(inputs))]


# target: (module, device, runner). The TensorRT target's artifact is ONNX, which onnxruntime runs.
TARGETS = {
    "onnx": (onnx_target, None, onnx_runner),
    "executorch": (et_target, None, executorch_runner),
    "tensorrt": (trt_target, batching_device(4), onnx_runner),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """target -> (directory, Written): the tiny graphs written with max_batch 8, once per target."""
    cache = {}

    def write(target: str):
        if target not in cache:
            directory = tmp_path_factory.mktemp(target)
            module, device, _ = TARGETS[target]
            cache[target] = directory, module.write(graphs(), directory, device=device, max_batch=MAX_BATCH)
        return cache[target]

    return write


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_artifact_matches_eager_at_every_batch(written, target, n):
    directory, _ = written(target)
    for graph in graphs():
        run = TARGETS[target][2](directory, graph)
        inputs = batch_of(graph, n)
        with torch.no_grad():
            expected = graph.module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run(inputs)
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected], graph.name
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e.numpy(), atol=ATOL, err_msg=f"{target} {graph.name} batch {n}")


def test_executorch_refuses_a_batch_above_max(written):
    directory, _ = written("executorch")
    for graph in graphs():
        with pytest.raises(RuntimeError, match="set_inputs"):
            executorch_runner(directory, graph)(batch_of(graph, MAX_BATCH + 1))


@pytest.mark.parametrize("target", ["onnx", "tensorrt"])
def test_onnx_batch_axis_is_symbolic_and_shared(written, target):
    directory, _ = written(target)
    for graph in graphs():
        model = onnx.load(str(directory / f"{graph.name}.onnx"), load_external_data=False)
        for value in (*model.graph.input, *model.graph.output):
            first, *rest = value.type.tensor_type.shape.dim
            assert first.dim_param == "batch" and not first.HasField("dim_value"), value.name
            assert all(d.dim_value > 0 for d in rest), value.name


def test_max_batch_1_exports_static_batch_1(tmp_path):
    onnx_target.write(graphs()[:1], tmp_path, device=None, max_batch=1)
    model = onnx.load(str(tmp_path / "net.onnx"), load_external_data=False)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 8, 8]


@pytest.mark.parametrize("max_batch", [0, -1, 2.0, True, None])
def test_max_batch_must_be_a_positive_int(max_batch):
    with pytest.raises(ValueError, match="max_batch must be a positive integer"):
        batched_example(graphs()[0], max_batch)


def test_example_inputs_must_be_batch_1():
    graph = dataclasses.replace(graphs()[0], example_inputs=(torch.randn(2, 3, 8, 8),))
    with pytest.raises(ValueError, match=r"graph 'net': example input 'image' has shape \(2, 3, 8, 8\)"):
        batched_example(graph, MAX_BATCH)


# --- TensorRT ------------------------------------------------------------------------------------


def test_tensorrt_profiles_span_1_opt_max(written):
    _, plan = written("tensorrt")
    assert plan.build.profiles == {
        graph.name: tuple(
            EngineProfile(name, (1, *x.shape[1:]), (4, *x.shape[1:]), (MAX_BATCH, *x.shape[1:]))
            for name, x in zip(graph.input_names, graph.example_inputs)
        )
        for graph in graphs()
    }


def test_tensorrt_opt_batch_defaults_to_1_and_stays_within_max(tmp_path):
    net = graphs()[:1]
    plan = trt_target.write(net, tmp_path, device=None, max_batch=MAX_BATCH).build
    assert plan.profiles["net"] == (EngineProfile("image", (1, 3, 8, 8), (1, 3, 8, 8), (MAX_BATCH, 3, 8, 8)),)
    with pytest.raises(ValueError, match=r"opt_batch 9 is outside 1\.\.max_batch \(8\)"):
        trt_target.write(net, tmp_path, device=batching_device(9), max_batch=MAX_BATCH)


def relu_model(shape: list) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_tensorrt_check_accepts_a_symbolic_batch_only():
    trt_target.check_for_tensorrt("batched", relu_model(["batch", 3, 8, 8]))
    for shape in (["batch", 3, "height", 8], [1, "channels", 8, 8], ["batch", 3, 8, 0]):
        with pytest.raises(ValueError, match=r"tensor 'x' has shape .*need static positive dims"):
            trt_target.check_for_tensorrt("spatial", relu_model(shape))


# --- Core ML -------------------------------------------------------------------------------------


def test_coreml_inputs_enumerate_or_range_over_the_batch(tmp_path):
    """One input: enumerated batch sizes (each Neural Engine eligible); several: a range, as Core ML allows."""
    ct = pytest.importorskip("coremltools")
    from exporter.targets import coreml as coreml_target

    written = coreml_target.write(graphs(), tmp_path, device=None, max_batch=MAX_BATCH)
    with zipfile.ZipFile(tmp_path / coreml_target.ARCHIVE) as zipped:
        zipped.extractall(tmp_path / "unzipped")
    spec = ct.utils.load_spec(str(tmp_path / "unzipped" / coreml_target.PACKAGE))
    functions = {f.name: f for f in spec.description.functions}
    assert set(functions) == set(written.placement) == {"net", "gated"}
    sizes = coreml_target.enumerated_batches(MAX_BATCH)
    assert [len(g.example_inputs) for g in graphs()] == [1, 2], "one graph of each kind"
    for graph in graphs():
        for declared, example in zip(functions[graph.name].input, graph.example_inputs, strict=True):
            array = declared.type.multiArrayType
            ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
            enumerated = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
            if len(graph.example_inputs) == 1:
                assert not ranges and enumerated == [(b, *example.shape[1:]) for b in sizes], graph.name
            else:
                assert not enumerated and ranges == [(1, MAX_BATCH), *((d, d) for d in example.shape[1:])], graph.name
            assert tuple(array.shape) == tuple(example.shape)  # the default batch is 1
