"""The TensorRT target and backend, short of building an engine: that needs TensorRT and an NVIDIA GPU.

Tested here: the ONNX is what TensorRT 10's parser takes (allow-listed ops,
static shapes, opset), the build plan matches the device, the bundle runs and
verifies through onnxruntime, the engine cache is keyed and written safely,
int8 graphs are symmetric QDQ networks (format 5's calibration images still
build), networks exported at several shapes share one artifact, the backend's
build-cache-run logic works against stand-ins for TensorRT and the GPU, and
the real backend refuses to run without a CUDA device.
Only test_engine_runs_on_this_device needs TensorRT itself.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import REPO_ROOT, copy_tree, read_json, write_json
from onnx import TensorProto, helper
from torch import nn

import exporter
import runtime
from exporter.graphs import ExportGraph
from exporter.quantize.onnx_qdq import quantize_qdq
from exporter.targets import tensorrt as trt_target
from exporter.targets.onnx import export_onnx
from runtime.backends import tensorrt as trt_backend
from runtime.backends.tensorrt import EngineSpec, Gpu, engine_key, engine_spec, read_cached_engine, write_cached_engine
from runtime.format.files import sha256_of
from runtime.format.devices import get_device
from runtime.format.fields import BundleError, Graph, TensorSpec
from runtime.format.manifest import EngineProfile, read_manifest
from runtime.profile.ops import op_breakdown, tensorrt_op_type

TOLERANCE = 1e-4
MAX_BATCH = 4


@pytest.fixture(scope="module")
def exported(checkpoint_dir, tmp_path_factory):
    """(bundle, report) of the session DRNet exported for TensorRT, for the default device."""
    out = tmp_path_factory.mktemp("bundles") / "drnet-tensorrt"
    return out, exporter.export(checkpoint_dir, "tensorrt", out)


@pytest.fixture(scope="module")
def trt_bundle(exported):
    return exported[0]


def tiny_graph(name: str, module: nn.Module, shape: tuple[int, ...]) -> ExportGraph:
    torch.manual_seed(0)
    return ExportGraph(name, module.eval(), (torch.randn(*shape),), ("image",), ("logits",), 0)


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()


# --- the exported DRNet bundle -------------------------------------------------------------------


def test_export_verifies_parity_through_onnxruntime(exported):
    _, report = exported
    assert report.parity is not None, "a tensorrt bundle must be verified on this machine"
    assert "onnxruntime" in report.parity.backend
    assert report.parity.path_mismatches == 0
    assert report.parity.within_tolerance


def test_graphs_are_prepared_for_tensorrt(trt_bundle):
    manifest = read_manifest(trt_bundle)
    # No two DRNet graphs are one network (their BN statistics differ), so none are merged.
    assert {name: graph.artifact for name, graph in manifest.graphs.items()} == {
        name: f"{name}.onnx" for name in manifest.graphs
    }
    assert set(manifest.artifacts) == {f"{name}.onnx" for name in manifest.graphs}
    for graph in manifest.graphs.values():
        path = trt_bundle / graph.artifact
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert opset >= 17
        for value in (*model.graph.input, *model.graph.output):
            batch, *dims = value.type.tensor_type.shape.dim
            assert batch.dim_param == "batch", value
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), value
        ops = {node.op_type for node in model.graph.node}
        assert ops <= trt_target.SUPPORTED_OPS, ops - trt_target.SUPPORTED_OPS
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}


def test_build_plan_is_the_default_devices(trt_bundle):
    manifest = read_manifest(trt_bundle)
    device = get_device("jetson-orin-nano")
    assert manifest.producer["device"] == device.name
    plan = manifest.build
    assert (plan.precision, plan.workspace_mb, plan.calibration) == ("fp16", 1024, None)
    assert plan.precision == device.precision and plan.workspace_mb == device.workspace_mb
    assert set(plan.profiles) == set(manifest.graphs)
    for name, graph in manifest.graphs.items():
        assert plan.profiles[name] == tuple(
            EngineProfile(s.name, (1, *s.shape), (device.opt_batch, *s.shape), (manifest.max_batch, *s.shape))
            for s in graph.inputs
        )


def test_bundle_runs_on_onnxruntime_like_the_onnx_bundle(trt_bundle, onnx_session, digits_test):
    _, _, normalized = digits_test
    images = normalized.numpy().astype(np.float32)
    session = runtime.load(trt_bundle, backend="onnxruntime")
    got, expected = session.run(images), onnx_session.run(images)
    assert got.paths == expected.paths
    assert np.abs(got.logits - expected.logits).max() <= TOLERANCE
    np.testing.assert_array_equal(got.macs, expected.macs)


# --- what TensorRT's parser takes ----------------------------------------------------------------


def model_with(nodes, *, inputs=None, outputs=None, opset=18, initializers=()) -> onnx.ModelProto:
    """A hand-built model: by default x (2, 2) -> nodes -> y, a scalar."""
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])]
    graph = helper.make_graph(nodes, "handmade", inputs, outputs, initializer=list(initializers))
    domains = sorted({node.domain for node in nodes} - {""})
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(domain, 1) for domain in domains)]
    return helper.make_model(graph, opset_imports=opsets)


def det_in_an_if_branch() -> onnx.ModelProto:
    branch = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"], name="inner_det")], "branch", [],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [])],
    )
    condition = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    return model_with(
        [helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=branch, else_branch=branch)],
        initializers=[condition],
    )


REJECTED = {
    "unsupported op": (lambda: model_with([helper.make_node("Det", ["x"], ["y"], name="det0")]), r"node 'det0' is op 'Det'"),
    "unsupported op in a subgraph": (det_in_an_if_branch, r"node 'inner_det' is op 'Det'"),
    "custom domain": (
        lambda: model_with([helper.make_node("Gelu", ["x"], ["y"], name="g", domain="com.example")]),
        r"op 'com.example::Gelu'",
    ),
    "dynamic dims but the batch": (
        lambda: model_with(
            [helper.make_node("Relu", ["x"], ["y"], name="r")],
            inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
            outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
        ),
        r"tensor 'x' has shape \['batch', 'width'\]; TensorRT bundles need static positive dims",
    ),
    "old opset": (lambda: model_with([helper.make_node("Det", ["x"], ["y"])], opset=13), r"opset 13 is outside 17\.\.20"),
    "asymmetric quantization": (
        lambda: model_with(
            [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dequantize")],
            outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
            initializers=[helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1]),
                          helper.make_tensor("zero", TensorProto.UINT8, [], [128])],
        ),
        r"node 'quantize' \(QuantizeLinear\) has zero point uint8 'zero'; TensorRT quantizes to int8 with zero point 0",
    ),
    "int32 bias dequantized": (
        lambda: model_with(
            [helper.make_node("DequantizeLinear", ["bias", "scale", "zero"], ["b"], name="dequantize"),
             helper.make_node("Add", ["x", "b"], ["y"], name="add")],
            outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
            initializers=[helper.make_tensor("bias", TensorProto.INT32, [2], [3, -4]),
                          helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1]),
                          helper.make_tensor("zero", TensorProto.INT32, [], [0])],
        ),
        r"node 'dequantize' \(DequantizeLinear\) has zero point int32 'zero'",
    ),
    "antialiased resize": (
        lambda: model_with(
            [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode="linear", antialias=1)],
            inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
            outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
            initializers=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5])],
        ),
        r"node 'rs' resizes with antialiasing",
    ),
}


@pytest.mark.parametrize("case", REJECTED)
def test_what_tensorrt_cannot_take_is_rejected_by_name(case):
    build, message = REJECTED[case]
    model = build()
    onnx.checker.check_model(model)  # valid ONNX: only TensorRT objects to it
    with pytest.raises(ValueError, match=message) as error:
        trt_target.check_for_tensorrt("handmade", model)
    assert "graph 'handmade'" in str(error.value)


def test_allow_list_is_tensorrts_not_onnxs():
    assert {"Conv", "Gemm", "Resize", "ReduceMean", "Reshape", "Relu", "Add"} <= trt_target.SUPPORTED_OPS
    assert not {"Det", "DFT", "STFT", "Unique", "Col2Im", "ConvInteger"} & trt_target.SUPPORTED_OPS


def test_export_of_an_unsupported_op_fails_before_writing(tmp_path):
    class Determinant(nn.Module):
        def forward(self, x):
            return torch.linalg.det(x)

    graph = ExportGraph("det", Determinant(), (torch.randn(1, 3, 3),), ("x",), ("y",), 0)
    with pytest.raises(ValueError, match=r"graph 'det': node '.*' is op 'Det'"):
        trt_target.write((graph,), tmp_path, max_batch=MAX_BATCH)
    assert list(tmp_path.iterdir()) == []


# --- int8: explicit quantization ---------------------------------------------------------------


def calibration_batches(seed: int, shape: tuple[int, ...] = (3, 8, 8)) -> list[tuple[np.ndarray]]:
    """Two batches for a graph whose one input has per-sample `shape`, as the exporter routes them."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, *shape)).astype(np.float32),) for n in (6, 5)]


@pytest.fixture(scope="module")
def int8_written(tmp_path_factory):
    """(directory, Written, graphs) of an int8 plan: `net` quantized on its batches, `other` left float."""
    directory = tmp_path_factory.mktemp("int8")
    graphs = (tiny_graph("net", tiny_net(0), (1, 3, 8, 8)), tiny_graph("other", tiny_net(1), (1, 3, 8, 8)))
    written = trt_target.write(
        graphs, directory, max_batch=MAX_BATCH, precision="int8", int8={"net": calibration_batches(0)}
    )
    return directory, written, graphs


def test_int8_plan_ships_qdq_graphs_and_no_calibration_images(int8_written):
    directory, written, _ = int8_written
    assert sorted(p.name for p in directory.iterdir()) == ["net.onnx", "other.onnx"]
    assert written.placement == {"net": ("net.onnx", None), "other": ("other.onnx", None)}
    assert (written.build.precision, written.build.calibration) == ("int8", None)
    assert set(written.build.profiles) == {"net", "other"}


def test_int8_graph_is_symmetric_qdq_of_supported_ops(int8_written):
    directory, _, _ = int8_written
    model = onnx.load(str(directory / "net.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert set(ops) <= trt_target.SUPPORTED_OPS, set(ops) - trt_target.SUPPORTED_OPS
    assert "BatchNormalization" not in ops, "BN folds into the int8 conv"
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    activations = weights = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = initializers[node.input[2]]
        assert zero.data_type == TensorProto.INT8 and not onnx.numpy_helper.to_array(zero).any(), node.name
        if node.input[0] in initializers:  # a weight: int8, one scale per output channel
            weight = initializers[node.input[0]]
            assert weight.data_type == TensorProto.INT8, node.name
            assert onnx.numpy_helper.to_array(initializers[node.input[1]]).shape == (weight.dims[0],), node.name
            weights += 1
        elif node.op_type == "QuantizeLinear":
            activations += 1
    assert (weights, activations) == (2, 5)  # conv and linear; the image, conv, relu, pool and logits
    assert TensorProto.INT32 not in {tensor.data_type for tensor in model.graph.initializer}, "biases stay float"


def test_int8_graph_computes_what_the_quantizer_wrote(int8_written):
    """Taking the biases out of int32 changes no output; and int8 stays near the float network."""
    directory, _, (net, _) = int8_written
    quantized = quantize_qdq(
        net, export_onnx(net, max_batch=MAX_BATCH), calibration_batches(0), symmetric_activations=True
    )
    x = calibration_batches(1)[1][0][:MAX_BATCH]
    written = trt_target._run(onnx.load(str(directory / "net.onnx")), {"image": x})[0]
    np.testing.assert_array_equal(written, trt_target._run(quantized, {"image": x})[0])
    with torch.no_grad():
        # Measured 6e-4 on logits of about 0.25.
        np.testing.assert_allclose(written, net.module(torch.from_numpy(x)).numpy(), atol=0.01)


def test_a_graph_left_out_of_int8_stays_float(int8_written):
    directory, _, _ = int8_written
    model = onnx.load(str(directory / "other.onnx"))
    assert not {"QuantizeLinear", "DequantizeLinear"} & {node.op_type for node in model.graph.node}
    assert {tensor.data_type for tensor in model.graph.initializer} <= {TensorProto.FLOAT, TensorProto.INT64}


def test_int8_plan_needs_a_graph_to_quantize(tmp_path):
    with pytest.raises(ValueError, match="an int8 TensorRT plan needs at least one graph to quantize"):
        trt_target.write((tiny_graph("net", tiny_net(0), (1, 3, 8, 8)),), tmp_path, max_batch=MAX_BATCH,
                         precision="int8")
    assert list(tmp_path.iterdir()) == []


# --- one network at several shapes ---------------------------------------------------------------


def two_shapes_of_one_network() -> tuple[nn.Module, tuple[ExportGraph, ExportGraph]]:
    shared = tiny_net(0)
    return shared, (tiny_graph("small", shared, (1, 3, 8, 8)), tiny_graph("large", shared, (1, 3, 12, 12)))


def test_one_network_at_two_shapes_becomes_one_artifact(tmp_path):
    """Detection and merge; that other weights at one shape stay apart shows in the DRNet bundle."""
    shared, graphs = two_shapes_of_one_network()
    written = trt_target.write(graphs, tmp_path, max_batch=MAX_BATCH)
    # shape_variants found the pair: same nodes and weights, different input shapes.
    assert written.placement == {"small": ("small+large.onnx", None), "large": ("small+large.onnx", None)}
    assert [p.name for p in tmp_path.iterdir()] == ["small+large.onnx"]
    model = onnx.load(str(tmp_path / "small+large.onnx"))
    assert [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == [
        "batch", 3, "image_2", "image_3"
    ]
    assert written.build.profiles["small"][0] == EngineProfile("image", (1, 3, 8, 8), (1, 3, 8, 8), (MAX_BATCH, 3, 8, 8))
    assert written.build.profiles["large"][0].max == (MAX_BATCH, 3, 12, 12)

    session = ort.InferenceSession(str(tmp_path / "small+large.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for graph in graphs:
            x = torch.randn(3, *graph.example_inputs[0].shape[1:])
            np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], shared(x).numpy(), atol=1e-6)


def test_one_engine_serves_both_shapes(tmp_path, trt_bundle):
    """The device builds one engine for the shared artifact, with a profile per shape, at one precision."""
    _, graphs = two_shapes_of_one_network()
    written = trt_target.write(graphs, tmp_path, max_batch=MAX_BATCH)
    manifest = dataclasses.replace(
        read_manifest(trt_bundle),
        graphs={
            g.name: Graph(g.name, written.placement[g.name][0], None,
                          (TensorSpec("image", tuple(g.example_inputs[0].shape[1:])),), (TensorSpec("logits", (2,)),), 0)
            for g in graphs
        },
        build=written.build,
    )
    spec = engine_spec(tmp_path, manifest, "small+large.onnx", tensorrt_version="10.3.0", gpu=Gpu("Orin", (8, 7)))
    assert spec.graphs == ("small", "large")
    assert spec.profiles == (written.build.profiles["small"], written.build.profiles["large"])

    large = dataclasses.replace(manifest.graphs["large"], precision="int8")
    mixed = dataclasses.replace(manifest, graphs={**manifest.graphs, "large": large})
    with pytest.raises(BundleError, match=r"graphs \['small', 'large'\] share 'small\+large\.onnx' but not a precision"):
        engine_spec(tmp_path, mixed, "small+large.onnx", tensorrt_version="10.3.0", gpu=Gpu("Orin", (8, 7)))


SHARING = {
    # name: (graphs as (name, shape), the graphs quantized and their calibration seed, the artifacts)
    "one network at two shapes, each int8 on its own inputs": (
        (("small", 8), ("large", 12)), {"small": 0, "large": 1}, {"small": "small.onnx", "large": "large.onnx"}
    ),
    "one network at one shape, int8 and float": (
        (("small", 8), ("again", 8)), {"small": 0}, {"small": "small.onnx", "again": "again.onnx"}
    ),
    "one network at one shape, twice int8 on the same inputs": (
        (("small", 8), ("again", 8)), {"small": 0, "again": 0},
        {"small": "small+again.onnx", "again": "small+again.onnx"},
    ),
}


@pytest.mark.parametrize("case", SHARING)
def test_qdq_graphs_share_an_artifact_only_when_identical(case, tmp_path):
    """A QDQ graph holds scales calibrated on its own inputs: one network at two shapes is then two networks
    to TensorRT, and an int8 graph never shares with a float one; the same QDQ network twice still does."""
    shapes, seeds, artifacts = SHARING[case]
    shared = tiny_net(0)
    graphs = tuple(tiny_graph(name, shared, (1, 3, side, side)) for name, side in shapes)
    sides = dict(shapes)
    int8 = {name: calibration_batches(seed, (3, sides[name], sides[name])) for name, seed in seeds.items()}
    written = trt_target.write(graphs, tmp_path, max_batch=MAX_BATCH, precision="int8", int8=int8)
    assert {name: file for name, (file, _) in written.placement.items()} == artifacts
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(artifacts.values()))


# --- engine cache --------------------------------------------------------------------------------


def base_spec() -> EngineSpec:
    return EngineSpec(
        artifact_sha256="a" * 64,
        graphs=("res32",),
        precision="fp16",
        workspace_mb=1024,
        profiles=((EngineProfile("image", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)),),),
        calibration_sha256=None,
        tensorrt_version="10.3.0",
        gpu=Gpu("Orin", (8, 7)),
    )


CHANGES = {
    "artifact": {"artifact_sha256": "b" * 64},
    "graph name": {"graphs": ("res24",)},
    "precision": {"precision": "int8"},
    "workspace": {"workspace_mb": 2048},
    "profiles": {"profiles": ((EngineProfile("image", (1, 3, 24, 24), (1, 3, 24, 24), (1, 3, 24, 24)),),)},
    "calibration": {"calibration_sha256": "c" * 64},
    "tensorrt version": {"tensorrt_version": "10.4.0"},
    "gpu name": {"gpu": Gpu("Xavier", (8, 7))},
    "compute capability": {"gpu": Gpu("Orin", (8, 6))},
}


def test_engine_key_is_stable():
    key = engine_key(base_spec())
    assert key == engine_key(base_spec())
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize("change", CHANGES)
def test_engine_key_changes_with_every_input(change):
    assert engine_key(dataclasses.replace(base_spec(), **CHANGES[change])) != engine_key(base_spec())


def test_engine_spec_reads_the_bundle(trt_bundle, tmp_path):
    manifest = read_manifest(trt_bundle)
    gpu = Gpu("Orin", (8, 7))
    spec = engine_spec(trt_bundle, manifest, "res32.onnx", tensorrt_version="10.3.0", gpu=gpu)
    assert spec.artifact_sha256 == manifest.artifacts["res32.onnx"].sha256
    assert spec.graphs == ("res32",)
    assert (spec.precision, spec.workspace_mb, spec.calibration_sha256) == ("fp16", 1024, None)
    assert spec.profiles == (manifest.build.profiles["res32"],)

    changed = copy_tree(trt_bundle, tmp_path / "changed")
    model = onnx.load(str(changed / "res32.onnx"))
    model.doc_string = "a different export"
    onnx.save(model, str(changed / "res32.onnx"))
    respec = engine_spec(changed, manifest, "res32.onnx", tensorrt_version="10.3.0", gpu=gpu)
    assert engine_key(respec) != engine_key(spec)

    with pytest.raises(BundleError, match="has no build plan"):
        engine_spec(trt_bundle, dataclasses.replace(manifest, build=None), "res32.onnx", tensorrt_version="10.3.0", gpu=gpu)


def test_int8_engine_spec_hashes_the_calibration_images(trt_bundle, tmp_path):
    bundle = copy_tree(trt_bundle, tmp_path / "int8")
    manifest = read_manifest(bundle)
    manifest = dataclasses.replace(
        manifest, build=dataclasses.replace(manifest.build, precision="int8", calibration="calibration.npy")
    )
    np.save(bundle / "calibration.npy", np.zeros((2, 3, 32, 32), np.float32))
    first = engine_spec(bundle, manifest, "res32.onnx", tensorrt_version="10.3.0", gpu=Gpu("Orin", (8, 7)))
    np.save(bundle / "calibration.npy", np.ones((2, 3, 32, 32), np.float32))
    second = engine_spec(bundle, manifest, "res32.onnx", tensorrt_version="10.3.0", gpu=Gpu("Orin", (8, 7)))
    assert first.calibration_sha256 is not None
    assert engine_key(first) != engine_key(second)


def test_cache_entry_round_trips(tmp_path):
    path = tmp_path / "engines" / "key.engine"
    assert read_cached_engine(path) is None
    write_cached_engine(path, b"serialized engine")
    assert read_cached_engine(path) == b"serialized engine"
    write_cached_engine(path, b"rebuilt engine")
    assert read_cached_engine(path) == b"rebuilt engine"
    assert [p.name for p in path.parent.iterdir()] == ["key.engine"], "temporary files left behind"


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) - 3],
    "payload flipped": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    "header only": lambda data: data[:40],
    "empty": lambda data: b"",
    "raw engine": lambda data: b"serialized engine",
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_cache_entry_reads_as_missing_and_is_rebuilt(tmp_path, corruption):
    path = tmp_path / "key.engine"
    write_cached_engine(path, b"serialized engine")
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    assert read_cached_engine(path) is None
    write_cached_engine(path, b"rebuilt engine")
    assert read_cached_engine(path) == b"rebuilt engine"


def test_interrupted_cache_write_keeps_the_old_entry(tmp_path, monkeypatch):
    path = tmp_path / "key.engine"
    write_cached_engine(path, b"old engine")

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(trt_backend.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_cached_engine(path, b"new engine")
    monkeypatch.undo()
    assert read_cached_engine(path) == b"old engine"
    assert [p.name for p in tmp_path.iterdir()] == ["key.engine"]


def test_engine_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(trt_backend.ENGINE_CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert trt_backend.engine_cache_dir() == tmp_path / ".cache" / "adaptive-edge" / "engines"
    monkeypatch.setenv(trt_backend.ENGINE_CACHE_ENV, str(tmp_path / "elsewhere"))
    assert trt_backend.engine_cache_dir() == tmp_path / "elsewhere"


# --- the backend's logic, on stand-ins for TensorRT and the GPU ---------------------------------
#
# TensorRT cannot run here, so these stand-ins implement the slice of the TensorRT 10 and
# cuda-python APIs the backend calls: "GPU memory" is host memory, and an "engine" runs its
# ONNX on onnxruntime. They check the backend's own logic (engine cache, build settings,
# profiles, buffers and copies), not TensorRT; test_engine_runs_on_this_device does that.


class FakeCuda:
    """cuda.bindings.runtime for a pretend GPU whose memory is ordinary host memory."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.memory: dict[int, ctypes.Array] = {}
        self.ok = self.cudaError_t.cudaSuccess

    def cudaGetDeviceCount(self):
        return (self.ok, self.devices) if self.devices else (self.cudaError_t.cudaErrorNoDevice, 0)

    def cudaGetErrorString(self, error):
        return self.ok, b"no CUDA-capable device is detected"

    def cudaGetDevice(self):
        return self.ok, 0

    def cudaGetDeviceProperties(self, device):
        return self.ok, types.SimpleNamespace(name=b"Fake Orin\0", major=8, minor=7)

    def cudaMalloc(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buffer)] = buffer
        return self.ok, ctypes.addressof(buffer)

    def cudaFree(self, pointer):
        self.memory.pop(pointer, None)
        return (self.ok,)

    def cudaStreamCreate(self):
        return self.ok, 7

    def cudaStreamDestroy(self, stream):
        return (self.ok,)

    def cudaStreamSynchronize(self, stream):
        return (self.ok,)

    def cudaMemcpyAsync(self, destination, source, nbytes, kind, stream):
        ctypes.memmove(destination, source, nbytes)
        return (self.ok,)


def fake_tensorrt() -> types.SimpleNamespace:
    """The TensorRT 10 Python API as the backend uses it; `trt.built` records every engine build."""
    magic = b"FAKE TENSORRT ENGINE\n"
    trt = types.SimpleNamespace(__version__="10.3.0-fake", built=[])

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3

        def __init__(self) -> None:
            pass

    class Network:
        onnx = b""

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            self.network = network

        def parse_from_file(self, path):
            self.network.onnx = Path(path).read_bytes()
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes = []

        def set_shape(self, name, minimum, optimum, maximum):
            self.shapes.append([name, list(minimum), list(optimum), list(maximum)])

    class Config:
        def __init__(self) -> None:
            self.flags, self.pools, self.profiles, self.int8_calibrator = set(), {}, [], None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            batches = 0
            while config.int8_calibrator and config.int8_calibrator.get_batch(["image"]) is not None:
                batches += 1
            plan = {
                "flags": sorted(config.flags),
                "workspace": config.pools.get("WORKSPACE"),
                "profiles": [p.shapes for p in config.profiles],
                "calibrator": config.int8_calibrator is not None,
                "calibration_batches": batches,
            }
            trt.built.append(plan)
            return magic + json.dumps(plan).encode() + b"\n" + network.onnx

    class Engine:
        def __init__(self, onnx_bytes, profiles) -> None:
            # The network as written, as TensorRT computes it: onnxruntime's fused int8 kernels would round and,
            # on CPUs without VNNI, saturate otherwise.
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
            self.names = [t.name for t in (*self.session.get_inputs(), *self.session.get_outputs())]
            self.num_io_tensors = len(self.names)
            self.profiles = profiles  # per profile, per input: [name, min, opt, max]
            self.nodes = [node.name for node in onnx.load_from_string(onnx_bytes).graph.node]

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context(self)

    class Context:
        """Input shapes as set, within the chosen profile; output shapes inferred from them, as TensorRT does."""

        def __init__(self, engine) -> None:
            self.engine, self.session, self.shapes, self.addresses = engine, engine.session, {}, {}

        def set_optimization_profile_async(self, index, stream):
            self.profile = index
            return True

        def set_input_shape(self, name, shape):
            _, low, _, high = next(p for p in self.engine.profiles[self.profile] if p[0] == name)
            if not all(lo <= n <= hi for lo, n, hi in zip(low, shape, high, strict=True)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            feeds = {i.name: np.zeros(self.shapes[i.name], np.float32) for i in self.session.get_inputs()}
            outputs = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
            return outputs[name].shape

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        profiler = None

        def execute_async_v3(self, stream):
            def at(name):
                shape = self.get_tensor_shape(name)
                memory = (ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[name])
                return np.ctypeslib.as_array(memory).reshape(shape)

            outputs = self.session.run(None, {i.name: at(i.name).copy() for i in self.session.get_inputs()})
            for output, value in zip(self.session.get_outputs(), outputs):
                at(output.name)[...] = value
            if self.profiler is not None:  # TensorRT reports every layer after each run: here, every ONNX node
                for node in self.engine.nodes:
                    self.profiler.report_layer_time(node, 0.01)
            return True

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if not data.startswith(magic):
                self.logger.log(ILogger.Severity.ERROR, "engine deserialization failed: bad magic")
                return None
            _, plan, onnx_bytes = data.split(b"\n", 2)
            return Engine(onnx_bytes, json.loads(plan)["profiles"])

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    class IProfiler:
        def __init__(self) -> None:
            pass

    vars(trt).update(
        ILogger=ILogger, OnnxParser=OnnxParser, Builder=Builder, Runtime=Runtime,
        IInt8EntropyCalibrator2=IInt8EntropyCalibrator2, IProfiler=IProfiler,
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        nptype=lambda dtype: np.dtype(dtype).type,
    )
    return trt


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """Stand-ins for tensorrt and cuda-python, and an empty engine cache."""
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", FakeCuda())
    monkeypatch.setenv(trt_backend.ENGINE_CACHE_ENV, str(tmp_path / "engines"))
    return trt, tmp_path / "engines"


def test_backend_builds_caches_and_runs_engines(fake_gpu, trt_bundle, onnx_session, digits_test):
    trt, cache = fake_gpu
    manifest = read_manifest(trt_bundle)
    session = runtime.load(trt_bundle)
    assert session.backend.describe().startswith("tensorrt 10.3.0-fake on Fake Orin (compute 8.7)")
    assert len(trt.built) == len(manifest.graphs) == len(list(cache.iterdir()))
    for plan in trt.built:
        assert plan["flags"] == ["FP16"] and plan["workspace"] == 1024 << 20
    assert [plan["profiles"] for plan in trt.built] == [
        [[[p.input, list(p.min), list(p.opt), list(p.max)] for p in manifest.build.profiles[name]]]
        for name in manifest.graphs
    ]

    _, _, normalized = digits_test
    images = normalized[:40].numpy().astype(np.float32)
    got, expected = session.run(images), onnx_session.run(images)
    assert got.paths == expected.paths
    assert np.abs(got.logits - expected.logits).max() <= TOLERANCE

    runtime.load(trt_bundle)
    assert len(trt.built) == len(manifest.graphs), "a second load must reuse the cached engines"

    entries = sorted(cache.iterdir())
    entries[0].write_bytes(entries[0].read_bytes()[:-10])  # corrupt: fails its digest
    write_cached_engine(entries[1], b"an engine TensorRT refuses")  # intact, but undeserializable
    runtime.load(trt_bundle)
    assert len(trt.built) == len(manifest.graphs) + 2, "exactly the two bad entries are rebuilt"
    assert all(read_cached_engine(path) for path in entries)


def test_the_op_breakdown_sums_iprofiler_layer_times_by_op_type(fake_gpu, trt_bundle):
    report = op_breakdown(trt_bundle, get_device("host-cpu"), backend="tensorrt", runs=2)
    manifest = read_manifest(trt_bundle)
    assert list(report) == [path.name for path in manifest.dispatch.paths]
    for point, row in report.items():
        assert row["top_ops"][0]["op"] == "Conv", f"{point}: every layer reported 0.01 ms, and convolutions are most: {row}"
        assert row["providers"] == pytest.approx({"Fake Orin": 1.0})
    assert report[manifest.dispatch.paths[0].name]["kernel_ms_per_image"] > 0


@pytest.mark.parametrize("layer, op", [
    ("node_conv2d_3 + node_relu_2", "Conv+Relu"),
    ("node_mean", "ReduceMean"),
    ("Reformatting CopyNode for Input Tensor 0 to node_conv2d_3", "Reformat"),
    ("{ForeignNode[node_linear...node_softmax]}", "ForeignNode"),
    ("PWN(node_relu_2, node_add)", "PWN"),
])
def test_a_tensorrt_layer_is_typed_by_the_onnx_nodes_it_runs(layer, op):
    node_ops = {"node_conv2d_3": "Conv", "node_relu_2": "Relu", "node_mean": "ReduceMean"}
    assert tensorrt_op_type(layer, node_ops) == op


def test_a_format_5_int8_plan_still_calibrates_on_its_images(fake_gpu, trt_bundle, tmp_path):
    trt, _ = fake_gpu
    bundle = copy_tree(trt_bundle, tmp_path / "int8")
    opt = read_manifest(bundle).build.profiles["res32"][0].opt[0]
    # TensorRT calibrates at the opt batch: two whole batches, and a remainder left out.
    np.save(bundle / "calibration.npy", np.zeros((2 * opt + 1, 3, 32, 32), np.float32))
    manifest = read_json(bundle / "manifest.json")
    # What a format 5 exporter wrote: no graph precisions, one image file to calibrate every graph on.
    manifest["format_version"] = 5
    for field in ("accuracy", "quantization"):
        manifest.pop(field, None)
    manifest["preprocessing"]["resize"] = "bilinear"  # "pil-bilinear" is version 7's
    for graph in manifest["graphs"].values():
        graph.pop("precision", None)
    manifest["build"].update(precision="int8", calibration="calibration.npy")
    manifest["artifacts"]["calibration.npy"] = {
        "sha256": sha256_of(bundle / "calibration.npy"), "bytes": (bundle / "calibration.npy").stat().st_size
    }
    write_json(bundle / "manifest.json", manifest)
    runtime.load(bundle)
    assert len(trt.built) == len(manifest["graphs"])
    assert all(plan["flags"] == ["FP16", "INT8"] and plan["calibrator"] for plan in trt.built)
    assert all(plan["calibration_batches"] == 2 for plan in trt.built)


def int8_manifest(written, graphs, precisions: dict[str, str]) -> types.SimpleNamespace:
    """The fields the backend reads off a manifest, for tiny graphs `written` at graph `precisions`."""
    return types.SimpleNamespace(
        graphs={
            g.name: Graph(g.name, written.placement[g.name][0], None, (TensorSpec("image", (3, 8, 8)),),
                          (TensorSpec("logits", (2,)),), 0, precisions[g.name])
            for g in graphs
        },
        build=written.build,
        max_batch=MAX_BATCH,
    )


def test_int8_plan_builds_int8_graphs_int8_and_the_others_fp16_without_a_calibrator(fake_gpu, int8_written):
    trt, _ = fake_gpu
    directory, written, graphs = int8_written
    manifest = int8_manifest(written, graphs, {"net": "int8", "other": "fp16"})
    backend = trt_backend.create()
    net = backend.load(directory, manifest, manifest.graphs["net"])
    backend.load(directory, manifest, manifest.graphs["other"])
    assert [(plan["flags"], plan["calibrator"]) for plan in trt.built] == [(["FP16", "INT8"], False), (["FP16"], False)]
    x = calibration_batches(2)[0][0][:3]
    (logits,) = net([x])
    expected = trt_target._run(onnx.load(str(directory / "net.onnx")), {"image": x})[0]
    np.testing.assert_allclose(logits, expected, atol=1e-6)


def test_engine_key_follows_the_graph_precision(int8_written):
    """One artifact read as an int8 graph or as a float one is two engines."""
    directory, written, graphs = int8_written
    gpu = Gpu("Orin", (8, 7))
    specs = {
        precision: engine_spec(directory, int8_manifest(written, graphs, {"net": precision, "other": "fp16"}),
                               "net.onnx", tensorrt_version="10.3.0", gpu=gpu)
        for precision in ("int8", "fp16")
    }
    assert [(s.precision, s.calibration_sha256) for s in specs.values()] == [("int8", None), ("fp16", None)]
    assert engine_key(specs["int8"]) != engine_key(specs["fp16"])


def test_an_int8_plan_needs_calibration_images_or_an_int8_graph(trt_bundle, tmp_path):
    bundle = copy_tree(trt_bundle, tmp_path / "int8")
    manifest = read_json(bundle / "manifest.json")
    manifest["build"]["precision"] = "int8"
    write_json(bundle / "manifest.json", manifest)
    needs = r"build\.calibration: int8 engines need a calibration artifact or at least one int8 graph"
    with pytest.raises(BundleError, match=needs):
        read_manifest(bundle)
    manifest["graphs"]["res32"]["precision"] = "int8"
    write_json(bundle / "manifest.json", manifest)
    assert read_manifest(bundle).build.calibration is None


def runner_for(tmp_path, *, max_batch: int, manifest_max_batch: int):
    """(eager net, the fake backend's runner) for a tiny net exported with `max_batch`, whose manifest says `manifest_max_batch`."""
    net = tiny_net(0)
    written = trt_target.write((tiny_graph("net", net, (1, 3, 8, 8)),), tmp_path, max_batch=max_batch)
    graph = Graph("net", "net.onnx", None, (TensorSpec("image", (3, 8, 8)),), (TensorSpec("logits", (2,)),), 0)
    # The fields TensorRTBackend.load reads off a manifest, without a whole bundle around them.
    manifest = types.SimpleNamespace(graphs={"net": graph}, build=written.build, max_batch=manifest_max_batch)
    return net, trt_backend.create().load(tmp_path, manifest, graph)


def test_runner_runs_every_batch_up_to_max_batch(fake_gpu, tmp_path):
    net, run = runner_for(tmp_path, max_batch=MAX_BATCH, manifest_max_batch=MAX_BATCH)
    for n in (1, 3, MAX_BATCH, 2):
        x = torch.randn(n, 3, 8, 8)
        (logits,) = run([x.numpy()])
        with torch.no_grad():
            np.testing.assert_allclose(logits, net(x).numpy(), atol=1e-5)
    for shape in ((MAX_BATCH + 1, 3, 8, 8), (0, 3, 8, 8), (2, 3, 8, 9), (3, 8, 8)):
        with pytest.raises(ValueError, match=rf"input 'image' must have shape \(n, \*\(3, 8, 8\)\) .* 1\.\.{MAX_BATCH}"):
            run([np.zeros(shape, np.float32)])


def test_runner_refuses_a_max_batch_beyond_the_engine_profile(fake_gpu, tmp_path):
    with pytest.raises(RuntimeError, match=r"input 'image' shape \(5, 3, 8, 8\) is outside its profile"):
        runner_for(tmp_path, max_batch=4, manifest_max_batch=5)


def test_backend_checks_the_gpu_before_tensorrt(monkeypatch, trt_bundle):
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", FakeCuda(devices=0))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # importing it would raise ImportError
    with pytest.raises(RuntimeError, match=r"no CUDA device is visible \(no CUDA-capable device is detected\)"):
        runtime.load(trt_bundle)


# --- the backend on this machine -----------------------------------------------------------------


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def cuda_device_visible() -> bool:
    from cuda.bindings import runtime as cudart

    error, count = cudart.cudaGetDeviceCount()
    return error == cudart.cudaError_t.cudaSuccess and count > 0


def test_backend_module_imports_without_torch():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from runtime.backends import tensorrt\n"
        "print(tensorrt.engine_key.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "engine_key"


def test_missing_packages_name_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"needs 'tensorrt'.*JetPack.*pip install tensorrt"):
        trt_backend._require("tensorrt", trt_backend._INSTALL_TENSORRT)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(ImportError, match=r"needs 'cuda.bindings.runtime'.*pip install cuda-python"):
        trt_backend.create()


def test_threads_do_not_apply_to_a_gpu_backend():
    with pytest.raises(ValueError, match="TensorRT runs on the GPU"):
        trt_backend.create(threads=2)


@pytest.mark.skipif(not installed("cuda.bindings.runtime"), reason="cuda-python is not installed")
def test_default_backend_refuses_to_run_without_a_cuda_device(trt_bundle):
    """No silent CPU fallback: asking for TensorRT without a GPU is an error that names the way out."""
    if cuda_device_visible():
        pytest.skip("a CUDA device is visible; test_engine_runs_on_this_device covers this machine")
    with pytest.raises(RuntimeError, match=r"no CUDA device is visible .*backend='onnxruntime'"):
        runtime.load(trt_bundle)


def test_engine_runs_on_this_device(trt_bundle, onnx_session, digits_test, tmp_path, monkeypatch):
    if not installed("tensorrt"):
        pytest.skip("TensorRT is not installed")
    monkeypatch.setenv(trt_backend.ENGINE_CACHE_ENV, str(tmp_path / "engines"))
    if not installed("cuda.bindings.runtime"):
        with pytest.raises(ImportError, match="pip install cuda-python"):
            runtime.load(trt_bundle)
        return
    if not cuda_device_visible():
        with pytest.raises(RuntimeError, match="no CUDA device is visible"):
            runtime.load(trt_bundle)
        return
    session = runtime.load(trt_bundle)
    assert session.backend.name == "tensorrt"
    engines = sorted((tmp_path / "engines").iterdir())
    assert len(engines) == len(read_manifest(trt_bundle).graphs)
    built = {path: os.stat(path).st_mtime_ns for path in engines}
    _, _, normalized = digits_test
    images = normalized.numpy().astype(np.float32)
    got, expected = session.run(images), onnx_session.run(images)
    # fp16 engines: logits agree to half precision; a near tie may pick another path.
    same = np.array([a == b for a, b in zip(got.paths, expected.paths)])
    assert same.mean() >= 0.95
    assert np.abs(got.logits - expected.logits)[same].max() <= 5e-2
    runtime.load(trt_bundle)  # the second load reuses every cached engine
    assert {path: os.stat(path).st_mtime_ns for path in engines} == built
