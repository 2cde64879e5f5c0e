"""A bundle's weights once in memory: onnxruntime sessions share one buffer per distinct weight, checked through the
backend (the OrtValues it registers, and onnxruntime reading them in place), never by RSS; and the device setting."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import runtime
from runtime.backends.onnxruntime import OnnxRuntimeBackend
from runtime.format.devices import default_weight_sharing, get_device, load_devices
from runtime.format.fields import Graph, TensorSpec
from runtime.session import Session
from helpers import copy_tree

CPU = ("CPUExecutionProvider",)


def _content(value) -> bytes:
    array = value.numpy()
    return hashlib.sha256(repr((array.dtype.str, array.shape)).encode() + array.tobytes()).digest()


def _shared_session(bundle: Path) -> Session:
    return Session(bundle, runtime.load(bundle, "onnxruntime").manifest, OnnxRuntimeBackend(1, CPU, weight_sharing="shared"))


def test_equal_weights_of_different_graphs_are_one_ortvalue(block_bundles):
    """BlockDrop's cached paths repeat its blocks' convolutions: one OrtValue each, registered with every session."""
    shared = _shared_session(block_bundles["blockdrop", "onnx"]).backend.shared
    registrations = [(graph, value) for graph, names in shared.registered.items() for value in names.values()]
    by_content: dict[bytes, set[int]] = {}
    for _, value in registrations:
        by_content.setdefault(_content(value), set()).add(id(value))
    assert all(len(ids) == 1 for ids in by_content.values()), "equal tensors must be one buffer"
    assert len(by_content) == len(shared.values)
    graphs_of: dict[int, set[str]] = {}
    for graph, value in registrations:
        graphs_of.setdefault(id(value), set()).add(graph)
    assert max(map(len, graphs_of.values())) > 2, "a block's weights serve its block graph and the cached paths"
    assert len(shared.values) < len(registrations) / 2


def test_onnxruntime_reads_the_shared_buffer_in_place(block_bundles, tmp_path):
    """Zeroing one shared conv filter changes the output of every graph that uses it: no session kept a copy.

    (A MatMul's or Gemm's weight is another matter: onnxruntime prepacks it into a buffer of each session's own.)
    """
    session = _shared_session(copy_tree(block_bundles["blockdrop", "onnx"], tmp_path / "bundle"))
    users: dict[int, list[str]] = {}
    for graph, names in session.backend.shared.registered.items():
        for value in names.values():
            if len(value.shape()) == 4:  # a conv filter, in whatever layout onnxruntime chose for this CPU
                users.setdefault(id(value), []).append(graph)
    value_id, graphs = max(users.items(), key=lambda item: len(item[1]))
    assert len(graphs) >= 2, "a block's filters serve its block graph and the cached paths through it"
    value = next(v for v in session.backend.shared.values.values() if id(v) == value_id)
    rng = np.random.default_rng(0)
    inputs = {g: [rng.standard_normal((2, *spec.shape)).astype(np.float32) for spec in session.manifest.graphs[g].inputs]
              for g in graphs}
    before = {g: session.graphs[g](inputs[g])[0] for g in graphs}
    buffer = _bytes_at(value)
    saved = buffer.copy()
    buffer[:] = 0
    try:
        for g in graphs:
            assert not np.allclose(session.graphs[g](inputs[g])[0], before[g]), f"{g} ran on a copy"
    finally:
        buffer[:] = saved
    for g in graphs:
        np.testing.assert_array_equal(session.graphs[g](inputs[g])[0], before[g])


def _bytes_at(value) -> np.ndarray:
    """A writable view of the bytes at the OrtValue's data pointer: what every session given it reads."""
    import ctypes

    return np.ctypeslib.as_array((ctypes.c_uint8 * value.numpy().nbytes).from_address(value.data_ptr()))


def test_shared_weights_give_the_same_answers_as_per_session(onnx_bundle, digits_test):
    """A bundle exported before weight sharing loads and runs unchanged: same paths, same logits, bit for bit."""
    images = digits_test[0][:48]
    manifest = runtime.load(onnx_bundle).manifest
    shared = Session(onnx_bundle, manifest, OnnxRuntimeBackend(1, CPU, weight_sharing="shared")).run(images)
    separate = Session(onnx_bundle, manifest, OnnxRuntimeBackend(1, CPU, weight_sharing="per-session")).run(images)
    assert shared.paths == separate.paths
    np.testing.assert_allclose(shared.logits, separate.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(shared.macs, separate.macs)


def test_the_device_setting_picks_the_sharing(onnx_bundle):
    assert get_device("host-cpu").weight_sharing == "shared"
    assert get_device("jetson-orin-nano").weight_sharing == "per-session"
    assert default_weight_sharing(None) == default_weight_sharing(CPU) == "shared"
    assert default_weight_sharing(("CUDAExecutionProvider", "CPUExecutionProvider")) == "per-session"
    assert "weights shared" in runtime.load(onnx_bundle, device=get_device("host-cpu")).backend.describe()
    assert "weights shared" in runtime.load(onnx_bundle).backend.describe(), "no device: the CPU's default"


HOST = """
host:
  description: a host
  backends: [{backends}]
  {extra}
  budgets: {{macs: 1000, latency_ms: 1.0}}
"""


@pytest.mark.parametrize("backends, extra, message", [
    ("onnxruntime", "weight_sharing: once", "device 'host': weight_sharing 'once' is not one of ['shared', 'per-session']"),
    ("onnxruntime", "weight_sharing: true", "weight_sharing True is not one of"),
    ("onnxruntime", "providers: [CUDAExecutionProvider]\n  weight_sharing: shared",
     "weight_sharing 'shared' shares CPU buffers, but providers ['CUDAExecutionProvider'] copy"),
    ("executorch", "weight_sharing: shared", "weight_sharing is set but backends ['executorch'] do not include onnxruntime"),
])
def test_a_bad_weight_sharing_setting_is_refused_by_name(tmp_path, backends, extra, message):
    path = tmp_path / "devices.yaml"
    path.write_text(HOST.format(backends=backends, extra=extra))
    with pytest.raises(ValueError) as error:
        load_devices(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_the_backend_refuses_a_bad_setting_too():
    with pytest.raises(ValueError, match="weight_sharing 'packed' is not one of"):
        OnnxRuntimeBackend(1, CPU, weight_sharing="packed")



def _conditional_model(directory: Path) -> Graph:
    """A MatMul, then an `If` whose branches are one MatMul each, every weight named "weight" and stored in external
    data: as onnxruntime's optimized copy of URNet's conditional graph names the filters it reorders ("reorder" in
    the main graph and in each branch). MatMuls, because onnxruntime leaves their weights and names as they are."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def matmul(source: str, out: str, shape: tuple[int, int]) -> tuple[onnx.NodeProto, onnx.TensorProto]:
        weight = numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "weight")
        return helper.make_node("MatMul", [source, "weight"], [out]), weight

    stem, stem_weight = matmul("image", "features", (16, 32))
    branches = []
    for name in ("run", "skip"):
        node, weight = matmul("features", f"{name}_out", (32, 64))
        output = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["batch", 64])
        branches.append(helper.make_graph([node], name, [], [output], [weight]))
    condition = [helper.make_node("ReduceMin", ["open"], ["all_open"], keepdims=0),
                 helper.make_node("Cast", ["all_open"], ["condition"], to=TensorProto.BOOL)]
    taken = helper.make_node("If", ["condition"], ["out"], then_branch=branches[0], else_branch=branches[1])
    graph = helper.make_graph(
        [stem, *condition, taken], "conditional",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("open", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 64])], [stem_weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, directory / "conditional.onnx", save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    return Graph("conditional", "conditional.onnx", None, (TensorSpec("image", (16,)), TensorSpec("open", ())),
                 (TensorSpec("out", (64,)),), macs=0)


def test_a_weight_named_alike_in_several_scopes_stays_with_its_scope(tmp_path):
    """Sharing gives a buffer by name to every scope of a session: a name the main graph and `If` branches each hold
    keeps each scope's own weight (ResNet-50's URNet conditional graph ran a branch on the stem's 3-channel filter),
    and the answers equal those of a session with weights of its own."""
    graph = _conditional_model(tmp_path)
    manifest = SimpleNamespace(max_batch=4)
    image = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    shared, separate = (OnnxRuntimeBackend(1, CPU, weight_sharing=s) for s in ("shared", "per-session"))
    run_shared, run_separate = (backend.load(tmp_path, manifest, graph) for backend in (shared, separate))
    for open_ in (1.0, 0.0):
        inputs = [image, np.full(2, open_, np.float32)]
        np.testing.assert_allclose(run_shared(inputs)[0], run_separate(inputs)[0], rtol=1e-6)
    assert shared.shared.kept["conditional"] == {"weight"}
