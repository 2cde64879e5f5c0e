"""Where each operating point's time goes, op by op, from the backend's own profiler.

`python -m runtime.profile ops --bundle BUNDLE --device NAME [--backend B]`
runs every operating point (Section.operating_points) with profiling on,
in sessions of its own, and sums the profiler's per-op kernel times by op
type: the top ops per path, and the share of kernel time on each provider (a
check, op by op, that the provider asked for really ran).

- onnxruntime: its profiling JSON, per node, with the execution provider. A
  control-flow node (URNet's `If`) is timed whole, branch nodes included, and
  each branch node is timed too: it counts its own time only (`self_times`).
- ExecuTorch: ETDump, read with the ExecuTorch Inspector: each XNNPACK op of
  a delegate (provider "XNNPACK"), and each kernel that ran outside a delegate
  (provider "portable").
- TensorRT (on the device): an IProfiler on every execution context, per
  layer; a fused layer's type joins the op types of the bundle's ONNX nodes
  it runs ("Conv+Relu"), so this one needs the onnx package. The provider is
  the GPU.

Core ML's per-op timing needs macOS and Xcode's tools: not covered.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.backends import Backend
from runtime.format.bundle import open_bundle
from runtime.format.devices import Device
from runtime.format.manifest import Manifest
from runtime.session import Session
from runtime.format.targets import TARGETS

__all__ = ["PROFILERS", "op_breakdown", "self_times", "tensorrt_op_type"]

# Kernel milliseconds by op type, and by provider, over every call a profiling backend made.
KernelTimes = tuple[Counter, Counter]
# A backend that profiles, and the call that reads what it recorded.
Profiling = tuple[Backend, Callable[[], KernelTimes]]


def _onnxruntime(device: Device, scratch: Path, bundle: Path, manifest: Manifest) -> Profiling:
    from runtime.backends.onnxruntime import DEFAULT_PROVIDERS, OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(device.threads, tuple(device.providers or DEFAULT_PROVIDERS), profile_dir=scratch)

    def kernel_times() -> KernelTimes:
        kernels, providers = Counter(), Counter()
        for graph_session in backend.sessions.values():
            events = json.loads(Path(graph_session.end_profiling()).read_text())
            for event, self_us in self_times(events):
                kernels[event["args"]["op_name"]] += self_us / 1e3
                providers[event["args"]["provider"]] += self_us / 1e3
        return kernels, providers

    return backend, kernel_times


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
    """Each node kernel event of an onnxruntime profile with its own time in µs: its duration less that of the node
    events nested inside it (an `If` runs its branch's nodes within its own kernel time)."""
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: (e["ts"], -e["dur"]))
    own = [float(e["dur"]) for e in nodes]
    open_nodes: list[int] = []  # indices of the nodes whose interval contains the current one, outermost first
    for i, event in enumerate(nodes):
        while open_nodes and nodes[open_nodes[-1]]["ts"] + nodes[open_nodes[-1]]["dur"] <= event["ts"]:
            open_nodes.pop()
        if open_nodes:
            own[open_nodes[-1]] -= event["dur"]
        open_nodes.append(i)
    return [(event, max(0.0, us)) for event, us in zip(nodes, own)]


# ETDump events that time a whole call, a load, or the dispatch around a kernel, not one op.
_ENVELOPES = {"DELEGATE_CALL", "OPERATOR_CALL", "Method::execute", "Method::init", "Program::load_method"}
_OP_INSTANCE = re.compile(r" #\d+$")  # XNNPACK numbers each op of a delegate: "Convolution (NHWC, F32) IGEMM #3"


def _executorch(device: Device, scratch: Path, bundle: Path, manifest: Manifest) -> Profiling:
    from runtime.backends.executorch import ExecuTorchBackend
    from runtime.backends.quiet import without_debug_buffer_notice, without_kernel_preference_notice

    with without_kernel_preference_notice():
        from executorch.devtools import Inspector

    backend = ExecuTorchBackend(device.threads, etdump=True)

    def kernel_times() -> KernelTimes:
        kernels, providers = Counter(), Counter()
        for trace in backend.write_etdumps(scratch):
            with without_debug_buffer_notice():
                blocks = Inspector(etdump_path=str(trace)).event_blocks
            for block in blocks:
                for event in block.events:
                    if event.name in _ENVELOPES or event.perf_data is None:
                        continue
                    ms = sum(event.perf_data.raw)
                    kernels[_OP_INSTANCE.sub("", event.name)] += ms
                    providers["XNNPACK" if event.is_delegated_op else "portable"] += ms
        return kernels, providers

    return backend, kernel_times


def tensorrt_op_type(layer: str, node_ops: dict[str, str]) -> str:
    """A TensorRT layer's op type, from the ONNX nodes it runs: a fused layer "a + b" is "Conv+Relu".

    TensorRT names a layer after its ONNX nodes (`node_ops`: node name -> op
    type); a layer TensorRT made itself keeps its own kind: "Reformat", a Myelin
    graph "ForeignNode", a pointwise fusion "PWN".
    """
    if layer.startswith("Reformatting CopyNode"):
        return "Reformat"
    if layer.startswith(("{ForeignNode", "PWN(")):
        return layer.split("[", 1)[0].split("(", 1)[0].strip("{")
    return "+".join(node_ops.get(part.strip(), part.strip()) for part in layer.split(" + "))


def _tensorrt(device: Device, scratch: Path, bundle: Path, manifest: Manifest) -> Profiling:
    import onnx

    from runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(profile_layers=True)
    node_ops = {node.name: node.op_type
                for artifact in {graph.artifact for graph in manifest.graphs.values()}
                for node in onnx.load(bundle / artifact, load_external_data=False).graph.node}

    def kernel_times() -> KernelTimes:
        kernels = Counter()
        for layer, ms in backend.layer_ms.items():
            kernels[tensorrt_op_type(layer, node_ops)] += ms
        return kernels, Counter({backend.gpu.name: sum(kernels.values())})

    return backend, kernel_times


PROFILERS = {"onnxruntime": _onnxruntime, "executorch": _executorch, "tensorrt": _tensorrt}


def op_breakdown(
    bundle: str | Path, device: Device, *, backend: str | None = None, runs: int = 20, top: int = 5
) -> dict[str, dict]:
    """Per operating point: its top ops (op type, ms per image, share of kernel time) and its providers' shares.

    `backend` defaults to the first backend of the bundle's target that has a per-op profiler.
    """
    bundle, manifest = Path(bundle), open_bundle(Path(bundle))
    runs_on = TARGETS[manifest.target].backends
    backend = backend or next((b for b in runs_on if b in PROFILERS), None)
    if backend not in PROFILERS:
        raise ValueError(f"{bundle}: no per-op profiler for a {manifest.target} bundle; "
                         f"profilers exist for {sorted(PROFILERS)}")
    if backend not in runs_on:
        raise ValueError(f"{bundle}: a {manifest.target} bundle runs on {list(runs_on)}, not {backend!r}")
    side, channels = manifest.preprocessing.resolution, len(manifest.preprocessing.mean)
    images = np.random.default_rng(0).integers(0, 256, (runs, 1, side, side, channels), dtype=np.uint8)
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, point in enumerate(manifest.dispatch.operating_points(manifest.graphs)):
            point_dir = Path(scratch) / f"point{index}"
            point_dir.mkdir()
            profiling, kernel_times = PROFILERS[backend](device, point_dir, bundle, manifest)
            session = Session(bundle, manifest, profiling, device.name)
            session.run(images[0], **point.options)  # warm-up: the first run's allocations are not the point's cost
            for image in images:
                session.run(image, **point.options)
            kernels, providers = kernel_times()
            total = sum(kernels.values()) or 1
            calls = runs + 1  # a profiler records from the session's start, the warm-up included
            report[point.name] = {
                "kernel_ms_per_image": total / calls,
                "top_ops": [{"op": op, "ms_per_image": ms / calls, "share": ms / total}
                            for op, ms in kernels.most_common(top)],
                "providers": {p: ms / total for p, ms in providers.most_common()},
            }
    return report
