"""TensorRT backend: builds an engine per ONNX artifact on the device, caches it, runs it on the GPU.

    import runtime
    session = runtime.load("bundles/drnet-trt")   # the first load builds the engines
    result = session.run(images)                   # later loads reuse the engine cache

An engine holds kernels chosen for one GPU by one TensorRT version, so the
bundle ships ONNX plus a build plan (runtime.format.manifest.BuildPlan) and this
backend compiles it here. Engines are cached under ~/.cache/adaptive-edge/engines
(or $ADAPTIVE_EDGE_ENGINE_CACHE), named by the sha256 of everything they
depend on: when any of it changes an engine is rebuilt, never a stale one loaded.

Engines take any batch from 1 to the manifest's `max_batch`: a runner holds
device buffers for `max_batch` samples and sets the actual batch on its
execution context at every call.

An int8 plan builds each graph the manifest marks int8 (a QDQ network carrying
its own scales) with INT8 and FP16, and every other graph in FP16. Bundles of
format 5 instead ship calibration images, which TensorRT's entropy calibrator
feeds to every graph.

There is no fallback. Without a visible CUDA device this backend refuses to
run; `runtime.load(bundle, backend="onnxruntime")` runs the same ONNX on the CPU.

Imports only numpy and the standard library at module level: TensorRT and
cuda-python load when a backend is created, and torch never.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.format.files import atomic_write, sha256_of
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import BuildPlan, EngineProfile, Manifest

if TYPE_CHECKING:
    from runtime.format.devices import Device

__all__ = [
    "ENGINE_CACHE_ENV",
    "Gpu",
    "EngineSpec",
    "engine_cache_dir",
    "engine_spec",
    "engine_key",
    "read_cached_engine",
    "write_cached_engine",
    "TensorRTBackend",
    "create",
]

ENGINE_CACHE_ENV = "ADAPTIVE_EDGE_ENGINE_CACHE"
DEFAULT_ENGINE_CACHE = Path("~/.cache/adaptive-edge/engines")
# A cache entry is this header, the sha256 of the engine, then the engine: a truncated
# or overwritten file fails the digest and is rebuilt instead of handed to TensorRT.
_ENGINE_HEADER = b"adaptive-edge tensorrt engine v1\n"
_INSTALL_TENSORRT = "on a Jetson it comes with JetPack (python3-libnvinfer); elsewhere pip install tensorrt"
_INSTALL_CUDA = "pip install cuda-python"


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class EngineSpec:
    """Everything a serialized engine depends on; `engine_key` names its cache entry after it."""

    artifact_sha256: str
    graphs: tuple[str, ...]  # the graphs that run on this artifact's engine
    precision: str  # the engine's: int8 for int8 graphs (and a calibrated plan's), else the plan's float precision
    workspace_mb: int | None
    profiles: tuple[tuple[EngineProfile, ...], ...]  # the engine's optimization profiles, in order
    calibration_sha256: str | None  # a calibrated int8 plan (format 5) only: the images decide the scales
    tensorrt_version: str
    gpu: Gpu


def engine_cache_dir() -> Path:
    return Path(os.environ.get(ENGINE_CACHE_ENV) or DEFAULT_ENGINE_CACHE).expanduser()


def engine_spec(bundle: Path, manifest: Manifest, artifact: str, *, tensorrt_version: str, gpu: Gpu) -> EngineSpec:
    """The spec of the engine built from `artifact` of `bundle`, read off the files and the build plan.

    Graphs that are one network at several input shapes share an artifact
    (exporter.targets.tensorrt merges them); their engine carries one
    optimization profile per distinct shape.
    """
    plan = _build_plan(bundle, manifest)
    graphs = tuple(name for name, graph in manifest.graphs.items() if graph.artifact == artifact)
    if not graphs:
        raise BundleError(f"{bundle}: no graph runs on artifact {artifact!r}")
    profiles: list[tuple[EngineProfile, ...]] = []
    for name in graphs:
        if plan.profiles is None or name not in plan.profiles:
            raise BundleError(f"{bundle}: the build plan has no optimization profile for graph {name!r}")
        if plan.profiles[name] not in profiles:
            profiles.append(plan.profiles[name])
    precisions = {manifest.graphs[name].precision for name in graphs}
    if len(precisions) > 1:
        raise BundleError(f"{bundle}: graphs {list(graphs)} share {artifact!r} but not a precision: {sorted(precisions)}")
    calibrated = plan.precision == "int8" and plan.calibration is not None
    return EngineSpec(
        artifact_sha256=sha256_of(bundle / artifact),
        graphs=graphs,
        precision=_engine_precision(plan.precision, precisions.pop(), calibrated=calibrated),
        workspace_mb=plan.workspace_mb,
        profiles=tuple(profiles),
        calibration_sha256=sha256_of(bundle / plan.calibration) if calibrated else None,
        tensorrt_version=tensorrt_version,
        gpu=gpu,
    )


def _engine_precision(plan: str, graph: str, *, calibrated: bool) -> str:
    """What an engine computes in: int8 for an int8 graph or any graph of a calibrated int8 plan; otherwise
    the plan's precision, fp16 where that is int8 (the float graphs of an int8 bundle)."""
    if graph == "int8" or calibrated:
        return "int8"
    return "fp16" if plan == "int8" else plan


def _build_plan(bundle: Path, manifest: Manifest) -> BuildPlan:
    if manifest.build is None:
        raise BundleError(f"{bundle}: the manifest has no build plan; re-export it with the tensorrt target")
    return manifest.build


def engine_key(spec: EngineSpec) -> str:
    """sha256 (hex) of `spec`: equal specs share an engine, any difference builds another."""
    return hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()


def read_cached_engine(path: Path) -> bytes | None:
    """The engine stored at `path`, or None if there is none or the entry is corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    size = len(_ENGINE_HEADER)
    header, digest, engine = data[:size], data[size : size + 32], data[size + 32 :]  # 32: a sha256 digest
    if header != _ENGINE_HEADER or not engine or digest != hashlib.sha256(engine).digest():
        return None
    return engine


def write_cached_engine(path: Path, engine: bytes) -> None:
    """Store `engine` at `path` atomically: readers see the old entry or the whole new one, never part."""
    atomic_write(path, lambda temporary: temporary.write_bytes(_ENGINE_HEADER + hashlib.sha256(engine).digest() + engine))


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, *, profile_layers: bool = False) -> None:
        """`profile_layers`: every execution context reports its layers' times (IProfiler) into `layer_ms`."""
        # The GPU check comes before TensorRT's import: without a GPU, installing TensorRT would not help.
        self.cuda = _require("cuda.bindings.runtime", _INSTALL_CUDA)
        self.gpu = _visible_gpu(self.cuda)
        self.trt = _require("tensorrt", _INSTALL_TENSORRT)
        self.log = _log(self.trt)
        self.runtime = self.trt.Runtime(self.log)
        self.cache = engine_cache_dir()
        self.engines: dict[tuple[Path, str], tuple[object, EngineSpec]] = {}
        self.layer_ms: Counter[str] = Counter()  # by TensorRT layer name, summed over every profiled run
        self.profiler = _layer_profiler(self.trt, self.layer_ms) if profile_layers else None

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        bundle = Path(bundle).resolve()
        engine, spec = self._engine(bundle, manifest, graph.artifact)
        profile = spec.profiles.index(_build_plan(bundle, manifest).profiles[graph.name])
        return _Runner(self.trt, self.cuda, engine, profile, graph, manifest.max_batch, self.profiler)

    def describe(self) -> str:
        major, minor = self.gpu.compute_capability
        return f"tensorrt {self.trt.__version__} on {self.gpu.name} (compute {major}.{minor}), engines in {self.cache}"

    def _engine(self, bundle: Path, manifest: Manifest, artifact: str) -> tuple[object, EngineSpec]:
        if (bundle, artifact) not in self.engines:
            spec = engine_spec(bundle, manifest, artifact, tensorrt_version=self.trt.__version__, gpu=self.gpu)
            path = self.cache / f"{engine_key(spec)}.engine"
            cached = read_cached_engine(path)
            # TensorRT returns None for an engine it cannot deserialize: rebuild that one too.
            engine = self.runtime.deserialize_cuda_engine(cached) if cached else None
            if engine is None:
                calibration = _build_plan(bundle, manifest).calibration if spec.calibration_sha256 else None
                serialized = self._build(bundle / artifact, spec, bundle / calibration if calibration else None)
                write_cached_engine(path, serialized)
                engine = self.runtime.deserialize_cuda_engine(serialized)
                if engine is None:
                    raise RuntimeError(
                        f"{bundle / artifact}: TensorRT cannot load the engine it just built: {self.log.report()}"
                    )
            self.engines[bundle, artifact] = (engine, spec)
        return self.engines[bundle, artifact]

    def _build(self, onnx_path: Path, spec: EngineSpec, calibration: Path | None) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.log)
        network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
        parser = trt.OnnxParser(network, self.log)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")
        config = builder.create_builder_config()
        if spec.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
        if spec.precision in ("fp16", "int8"):
            # int8 keeps FP16 on too: layers TensorRT cannot quantize then run in half, not single, precision.
            config.set_flag(trt.BuilderFlag.FP16)
        profiles = []
        for shapes in spec.profiles:
            profile = builder.create_optimization_profile()
            for entry in shapes:
                profile.set_shape(entry.input, entry.min, entry.opt, entry.max)
            config.add_optimization_profile(profile)
            profiles.append(profile)
        if spec.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if calibration is not None:  # a format 5 plan; a QDQ network carries its own scales
            calibrator = _calibrator(trt, self.cuda, np.load(calibration), spec.profiles[0])  # lives through the build
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profiles[0])
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{onnx_path}: TensorRT could not build a {spec.precision} engine: {self.log.report()}")
        return bytes(serialized)


def create(*, threads: int | None = None, device: Device | None = None) -> TensorRTBackend:
    """The backend; `device` is accepted like every backend's, but engines follow the bundle's build plan."""
    if threads is not None:
        raise ValueError(f"threads={threads} sets CPU threads; TensorRT runs on the GPU, so leave it unset")
    return TensorRTBackend()


class _Runner:
    """One execution context of an engine, on its own stream, with device buffers for `max_batch` samples.

    `graph`'s tensor shapes are per sample; a call runs the batch its inputs
    hold, 1 to `max_batch`, and returns outputs of that batch.
    """

    def __init__(self, trt, cuda, engine, profile: int, graph: Graph, max_batch: int, profiler=None) -> None:
        self.cuda, self.engine, self.graph, self.max_batch = cuda, engine, graph, max_batch
        self.where = where = f"{graph.artifact} (graph {graph.name!r})"
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        expected = {spec.name for spec in (*graph.inputs, *graph.outputs)}
        if names != expected:
            raise BundleError(f"{where}: the engine's tensors {sorted(names)} differ from the manifest's {sorted(expected)}")
        self.stream = _cuda_call(cuda.cudaStreamCreate(), "cudaStreamCreate")
        weakref.finalize(self, cuda.cudaStreamDestroy, self.stream)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"{where}: TensorRT could not create an execution context (out of GPU memory?)")
        if profiler is not None:
            self.context.profiler = profiler
        if not self.context.set_optimization_profile_async(profile, int(self.stream)):
            raise RuntimeError(f"{where}: TensorRT refused optimization profile {profile}")
        # Sized at the largest batch, the buffers serve every smaller one.
        self._set_batch(max_batch)
        self.buffers = {}
        for spec in (*graph.inputs, *graph.outputs):
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(spec.name)))
            shape = tuple(self.context.get_tensor_shape(spec.name))
            if dtype != np.dtype(spec.dtype) or shape != (max_batch, *spec.shape):
                raise BundleError(
                    f"{where}: at batch {max_batch} the engine's {spec.name!r} is {dtype}{shape}, "
                    f"the manifest's {spec.dtype}{(max_batch, *spec.shape)}"
                )
            self.buffers[spec.name] = _DeviceBuffer(cuda, int(np.prod(shape)) * dtype.itemsize)
            self.context.set_tensor_address(spec.name, self.buffers[spec.name].pointer)

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        cuda, graph = self.cuda, self.graph
        if len(inputs) != len(graph.inputs):
            raise ValueError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(inputs)}")
        arrays = [np.ascontiguousarray(array, dtype=spec.dtype) for spec, array in zip(graph.inputs, inputs)]
        self._set_batch(self._batch_of(arrays))
        for spec, array in zip(graph.inputs, arrays):  # `arrays` outlives the asynchronous copies
            self.buffers[spec.name].copy_from(array, self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{graph.artifact}: TensorRT failed to run graph {graph.name!r}")
        outputs = [np.empty(tuple(self.context.get_tensor_shape(s.name)), dtype=s.dtype) for s in graph.outputs]
        for spec, array in zip(graph.outputs, outputs):
            self.buffers[spec.name].copy_to(array, self.stream)
        _cuda_call(cuda.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outputs

    def _batch_of(self, arrays: list[np.ndarray]) -> int:
        """The batch `arrays` hold: ValueError unless every input is (n, *its per-sample shape), n in 1..max_batch."""
        graph = self.graph
        n = arrays[0].shape[0] if arrays[0].ndim else 0
        for spec, array in zip(graph.inputs, arrays):
            if array.shape != (n, *spec.shape) or not 1 <= n <= self.max_batch:
                raise ValueError(
                    f"graph {graph.name!r}: input {spec.name!r} must have shape (n, *{spec.shape}) with one n "
                    f"in 1..{self.max_batch} for all inputs, got {array.shape}"
                )
        return n

    def _set_batch(self, n: int) -> None:
        for spec in self.graph.inputs:
            if not self.context.set_input_shape(spec.name, (n, *spec.shape)):
                raise RuntimeError(f"{self.where}: input {spec.name!r} shape {(n, *spec.shape)} is outside its profile")


class _DeviceBuffer:
    """GPU memory freed with its owner."""

    def __init__(self, cuda, nbytes: int) -> None:
        self.cuda, self.nbytes = cuda, nbytes
        self.pointer = _cuda_call(cuda.cudaMalloc(nbytes), "cudaMalloc")
        weakref.finalize(self, cuda.cudaFree, self.pointer)

    def copy_from(self, array: np.ndarray, stream) -> None:
        kind = self.cuda.cudaMemcpyKind.cudaMemcpyHostToDevice
        _cuda_call(self.cuda.cudaMemcpyAsync(self.pointer, array.ctypes.data, array.nbytes, kind, stream), "cudaMemcpyAsync")

    def copy_to(self, array: np.ndarray, stream) -> None:
        kind = self.cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_call(self.cuda.cudaMemcpyAsync(array.ctypes.data, self.pointer, array.nbytes, kind, stream), "cudaMemcpyAsync")


def _calibrator(trt, cuda, images: np.ndarray, profile: tuple[EngineProfile, ...]):
    """TensorRT's entropy calibrator over `images`, fed to the graph's single image input at the profile's opt batch.

    For format 5 bundles, whose int8 plans ship calibration images (their
    exporter wrote them only for graphs whose one input is the image).
    TensorRT calibrates at the opt shapes of the calibration profile, so the
    images go in whole batches of that size; a remainder is left out.
    """
    if len(profile) != 1 or tuple(profile[0].opt[1:]) != images.shape[1:] or len(images) < profile[0].opt[0]:
        raise BundleError(f"calibration images of shape {images.shape} do not fit the engine inputs {profile}")
    batch = profile[0].opt[0]

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.next = 0
            self.buffer = _DeviceBuffer(cuda, images[:batch].nbytes)
            self.stream = _cuda_call(cuda.cudaStreamCreate(), "cudaStreamCreate")
            weakref.finalize(self, cuda.cudaStreamDestroy, self.stream)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if self.next + batch > len(images):
                return None
            chunk = np.ascontiguousarray(images[self.next : self.next + batch], dtype=np.float32)
            self.next += batch
            self.buffer.copy_from(chunk, self.stream)
            _cuda_call(cuda.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            return [self.buffer.pointer]

        def read_calibration_cache(self):
            return None  # the calibrated engine itself is cached

        def write_calibration_cache(self, cache) -> None:
            return None

    return Calibrator()


def _layer_profiler(trt, layer_ms: Counter):
    """An IProfiler adding each layer's milliseconds to `layer_ms`; TensorRT 10 calls it after every enqueueV3."""

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)  # TensorRT's bindings need the base class initialised explicitly

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            layer_ms[layer_name] += ms

    return LayerTimes()


def _log(trt):
    """A TensorRT logger that keeps warnings and errors for exception messages instead of printing them."""

    class Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, message: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(f"{severity.name}: {message}")

        def report(self) -> str:
            return " | ".join(self.messages[-5:]) or "TensorRT logged no warning or error"

    return Log()


def _require(module: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"the tensorrt backend needs {module!r}, which is missing ({error}); {install}") from None


def _visible_gpu(cuda) -> Gpu:
    """The current CUDA device; RuntimeError when there is none, since this backend never falls back to the CPU."""
    error, count = cuda.cudaGetDeviceCount()
    if error != cuda.cudaError_t.cudaSuccess or not count:
        reason = _cuda_error(cuda, error) if error != cuda.cudaError_t.cudaSuccess else "the CUDA runtime lists 0 devices"
        raise RuntimeError(
            f"no CUDA device is visible ({reason}); the tensorrt backend runs only on an NVIDIA GPU and does not "
            "fall back to the CPU. Run the bundle's ONNX on the CPU with backend='onnxruntime'."
        )
    device = _cuda_call(cuda.cudaGetDevice(), "cudaGetDevice")
    properties = _cuda_call(cuda.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = properties.name
    name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\0", 1)[0]
    return Gpu(name, (int(properties.major), int(properties.minor)))


def _cuda_call(result: tuple, what: str):
    """cuda-python returns (error, value...): raise on the error, return the value."""
    error, *values = result
    if error != type(error).cudaSuccess:
        raise RuntimeError(f"{what} failed: {error.name}")
    return values[0] if values else None


def _cuda_error(cuda, error) -> str:
    _, text = cuda.cudaGetErrorString(error)
    return text.decode() if isinstance(text, bytes) else str(text)
