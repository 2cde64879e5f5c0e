"""ONNX Runtime backend: one InferenceSession per graph file, on the device's execution providers.

A bundle's graphs repeat each other's weights (a cached path holds the
convolutions of its blocks). onnxruntime rewrites weights while it loads a
graph: it folds BN's affine into the conv and, on x86, reorders filters for
its NCHWc kernels; each session keeps its own rewritten copy, and Python has
no prepacked-weights container to share them. With `weight_sharing="shared"` each
graph is optimized once into a temporary ONNX copy with its weights in external
data, whose initializers are matched by content across the bundle's graphs:
every distinct tensor, as this CPU runs it, becomes one buffer (`SharedWeights`)
handed to every session that uses it through `SessionOptions.add_initializer`,
and the session loads that copy without optimizing again. onnxruntime keeps a CPU OrtValue given
this way instead of copying it. Peak RSS and latency of either setting:
benchmarks/results/memory_onnxruntime.md.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph

from runtime.backends import check_signature
from runtime.format.devices import Device, check_weight_sharing, default_weight_sharing
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import Manifest

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
SHARED_MIN_BYTES = 1024  # smaller initializers (shapes, axes, scales) stay inside each session, as ONNX keeps them inline
_shared_arena: list[bool] = []  # whether this process has registered its shared CPU arena


def _share_cpu_arena(options: ort.SessionOptions) -> None:
    """Let every session of the process draw activations from one CPU arena instead of one arena each.

    A bundle holds many graphs; with an arena per session, each keeps the
    peak activation memory of its own largest batch.
    """
    if not _shared_arena:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena.append(True)
    options.add_session_config_entry("session.use_env_allocators", "1")


def _onnx_initializers():
    """A reader of the ONNX fields naming a model's initializers and where their external data lies, in the main graph
    and in the subgraphs of its nodes: ModelProto.graph, GraphProto's initializer and node, NodeProto.attribute,
    AttributeProto's g and graphs, and TensorProto's dims, data_type, name, external_data and data_location, by the
    field numbers of onnx.proto, declared to protobuf (a dependency of onnxruntime); every other field is skipped.

    The onnx package would read them too, but it is no device dependency and adds about 30 MB to the process.
    """
    if not _schema:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        schema = descriptor_pb2.FileDescriptorProto(name="onnx_initializers.proto", package="onnx_initializers")
        messages = {
            "StringStringEntryProto": [("key", 1, field.TYPE_STRING, None), ("value", 2, field.TYPE_STRING, None)],
            "TensorProto": [("dims", 1, field.TYPE_INT64, None), ("data_type", 2, field.TYPE_INT32, None),
                            ("name", 8, field.TYPE_STRING, None),
                            ("external_data", 13, field.TYPE_MESSAGE, "StringStringEntryProto"),
                            ("data_location", 14, field.TYPE_INT32, None)],
            "AttributeProto": [("g", 6, field.TYPE_MESSAGE, "GraphProto"),
                               ("graphs", 11, field.TYPE_MESSAGE, "GraphProto")],
            "NodeProto": [("attribute", 5, field.TYPE_MESSAGE, "AttributeProto")],
            "GraphProto": [("node", 1, field.TYPE_MESSAGE, "NodeProto"),
                           ("initializer", 5, field.TYPE_MESSAGE, "TensorProto")],
            "ModelProto": [("graph", 7, field.TYPE_MESSAGE, "GraphProto")],
        }
        repeated = {"dims", "external_data", "initializer", "node", "attribute", "graphs"}
        for message, fields in messages.items():
            declared = schema.message_type.add(name=message)
            for name, number, kind, type_name in fields:
                declared.field.add(
                    name=name, number=number, type=kind,
                    label=field.LABEL_REPEATED if name in repeated else field.LABEL_OPTIONAL,
                    type_name=f".onnx_initializers.{type_name}" if type_name else None,
                )
        pool = descriptor_pool.DescriptorPool()
        pool.Add(schema)
        _schema.append(message_factory.GetMessageClass(pool.FindMessageTypeByName("onnx_initializers.ModelProto")))
    return _schema[0]


_schema: list = []  # the reader's message class, declared once per process
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def _every_initializer(graph) -> Iterator:
    """The initializers of a parsed GraphProto and of every subgraph under its nodes (an `If`'s branches)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _every_initializer(attribute.g)
            for subgraph in attribute.graphs:
                yield from _every_initializer(subgraph)


class SharedWeights:
    """The distinct initializers of a bundle's optimized graphs, each one OrtValue, matched by type, shape and bytes.

    `registered[graph]` maps each initializer name of that graph's session to
    the OrtValue it was given, so a caller can see which sessions share a buffer.
    `SessionOptions.add_initializer` gives a buffer by name to every scope of a
    session, and onnxruntime names the weights it writes inside `If` branches
    alike ("reorder" in each branch and in the main graph): a name held by more
    than one scope stays in that session's own memory (`kept[graph]` names them),
    or a branch would run on another scope's filter.
    """

    def __init__(self) -> None:
        self.values: dict[bytes, ort.OrtValue] = {}  # by content: sha256 of (ONNX type, shape, bytes)
        self.registered: dict[str, dict[str, ort.OrtValue]] = {}
        self.kept: dict[str, set[str]] = {}

    def share(self, graph: str, model: Path, options: ort.SessionOptions) -> None:
        """Give `options` this process's buffer for every initializer that `model` (ONNX) keeps in external data
        under a name no other of its scopes holds."""
        parsed = _onnx_initializers()()
        parsed.ParseFromString(model.read_bytes())
        tensors = list(_every_initializer(parsed.graph))
        scopes = Counter(tensor.name for tensor in tensors)
        self.kept[graph] = {name for name, count in scopes.items() if count > 1}
        registered = self.registered.setdefault(graph, {})
        for tensor in tensors:
            if tensor.data_location != EXTERNAL or tensor.name in self.kept[graph]:
                continue
            where = {entry.key: entry.value for entry in tensor.external_data}
            offset, length = int(where.get("offset", 0)), int(where["length"])
            raw = np.fromfile(model.parent / where["location"], dtype=np.uint8, count=length, offset=offset)
            dims = tuple(tensor.dims)
            key = hashlib.sha256(repr((tensor.data_type, dims)).encode() + raw.tobytes()).digest()
            if key not in self.values:
                # The OrtValue holds the array; onnxruntime reads its bytes as the tensor's ONNX type.
                self.values[key] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    raw.view(_unsigned(length, dims)).reshape(dims), tensor.data_type
                )
            registered[tensor.name] = self.values[key]
            options.add_initializer(tensor.name, self.values[key])


def _unsigned(nbytes: int, dims: tuple[int, ...]) -> np.dtype:
    """An unsigned numpy type as wide as one element of a tensor of `nbytes` and shape `dims`."""
    return np.dtype(f"u{nbytes // int(np.prod(dims, dtype=np.int64))}")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self, threads: int | None, providers: tuple[str, ...], *, profile_dir: Path | None = None,
        weight_sharing: str | None = None,
    ) -> None:
        """`profile_dir`: every session writes onnxruntime's profile there, one file per graph.
        `weight_sharing`: "shared" or "per-session", as devices.yaml documents it (None: the providers' default)."""
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeError(
                f"onnxruntime {ort.__version__} here offers {ort.get_available_providers()}, not {missing}; "
                "install the onnxruntime build for this device or change its providers in devices.yaml"
            )
        weight_sharing = weight_sharing or default_weight_sharing(providers)
        check_weight_sharing(weight_sharing, providers)
        self.threads = threads
        self.providers = providers
        self.profile_dir = profile_dir
        self.weight_sharing = weight_sharing
        self.shared = SharedWeights() if weight_sharing == "shared" else None
        self.unshared: dict[str, str] = {}  # graph -> why it keeps its own weights under "shared"
        self.options = self._options()  # how a graph as exported is loaded (per-session, and the optimizing pass)
        self.sessions: dict[str, ort.InferenceSession] = {}  # graph name -> its session, for the op profiler

    def _options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        _share_cpu_arena(options)
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        # A bundle is several sessions, each with its own intra-op pool, whose idle threads spin by default and
        # take the cores from the next graph and from preprocessing. python -m benchmarks.resolution, DRNet on
        # ResNet-50 at 2 threads, each run timing static and dynamic through Session.run: with spinning, dynamic
        # 0.82x the static model's speed (kept 0.77 of its subgraphs' speedup); without, 1.22x (kept 0.98).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = self.profile_dir is not None
        return options

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        path = bundle / graph.artifact
        where = f"{path} (graph {graph.name!r})"
        try:
            session = self._shared_session(path, graph) if self.shared else self._session(str(path), self.options, graph)
        except Exception as error:  # onnxruntime raises its own exception types, one per status code
            raise BundleError(f"{where}: onnxruntime cannot load it: {error}") from error
        # onnxruntime falls back to the CPU silently when a provider cannot take the model; refuse instead.
        dropped = [p for p in self.providers if p not in session.get_providers()]
        if dropped:
            raise RuntimeError(f"{where}: onnxruntime dropped {dropped} and would run on {session.get_providers()}")
        check_signature(
            where, graph, manifest.max_batch,
            [(value.name, tuple(value.shape)) for value in session.get_inputs()],
            [(value.name, tuple(value.shape)) for value in session.get_outputs()],
        )
        self.sessions[graph.name] = session
        names = [spec.name for spec in graph.inputs]
        run_session = session.run

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return run_session(None, dict(zip(names, inputs)))

        return run

    def _session(self, model: str | bytes, options: ort.SessionOptions, graph: Graph) -> ort.InferenceSession:
        if self.profile_dir is not None:
            # A file per graph: onnxruntime names a profile by its prefix and the second the session ends,
            # so sessions sharing a prefix and ending within one second would write into one file.
            options.profile_file_prefix = str(self.profile_dir / graph.name)
        return ort.InferenceSession(model, options, providers=list(self.providers))

    def _shared_session(self, path: Path, graph: Graph) -> ort.InferenceSession:
        """`graph` optimized here once (BN folded, filters in this CPU's layout) into an ONNX copy whose weights lie in
        external data, then loaded as that copy with the bundle's shared buffers for them, and not optimized again.

        ONNX, not ORT format: a session keeps the initializers its model file holds, even those it was given
        buffers for; a model whose weights are external holds only their names and offsets.
        """
        with tempfile.TemporaryDirectory(prefix="ort-optimized-") as scratch:
            optimized = Path(scratch) / f"{graph.name}.onnx"
            options = self._options()
            options.enable_profiling = False
            options.optimized_model_filepath = str(optimized)
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{graph.name}.bin")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             str(SHARED_MIN_BYTES))
            # Its one warning says the copy holds this CPU's layout, which is the point: the copy never leaves here.
            options.log_severity_level = 3
            ort.InferenceSession(str(path), options, providers=list(self.providers))
            options = self._options()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.shared.share(graph.name, optimized, options)
            try:
                return self._session(str(optimized), options, graph)
            except InvalidGraph as error:
                # onnxruntime 1.32 writes the optimized copy of a graph with If subgraphs invalid (NCHWc reorder
                # nodes named alike in both branches: "Graph must be in single static assignment (SSA) form").
                # Such a graph keeps its own weights, as per-session would, and describe() names it.
                del self.shared.registered[graph.name], self.shared.kept[graph.name]
                self.unshared[graph.name] = str(error).splitlines()[0][-160:]
        return self._session(str(path), self.options, graph)

    def describe(self) -> str:
        unshared = f" but for {sorted(self.unshared)}" if self.unshared else ""
        return (f"onnxruntime {ort.__version__} {'+'.join(self.providers)}, threads={self.threads or 'default'}, "
                f"weights {self.weight_sharing}{unshared}")


def create(*, threads: int | None = None, device: Device | None = None) -> OnnxRuntimeBackend:
    providers = tuple((device.providers if device else None) or DEFAULT_PROVIDERS)
    return OnnxRuntimeBackend(threads, providers, weight_sharing=device.weight_sharing if device else None)
