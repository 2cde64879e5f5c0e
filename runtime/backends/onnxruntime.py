"""ONNX Runtime backend: one InferenceSession per graph file, on the device's execution providers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.backends import check_signature
from runtime.format.devices import Device
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import Manifest

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
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


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, threads: int | None, providers: tuple[str, ...], *, profile_dir: Path | None = None) -> None:
        """`profile_dir`: every session writes onnxruntime's profile there, one file per graph."""
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeError(
                f"onnxruntime {ort.__version__} here offers {ort.get_available_providers()}, not {missing}; "
                "install the onnxruntime build for this device or change its providers in devices.yaml"
            )
        self.options = ort.SessionOptions()
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        _share_cpu_arena(self.options)
        if threads:
            self.options.intra_op_num_threads = threads
            self.options.inter_op_num_threads = 1
        # A bundle is several sessions, each with its own intra-op pool, whose idle threads spin by default and
        # take the cores from the next graph and from preprocessing. python -m benchmarks.resolution, DRNet on
        # ResNet-50 at 2 threads, each run timing static and dynamic through Session.run: with spinning, dynamic
        # 0.82x the static model's speed (kept 0.77 of its subgraphs' speedup); without, 1.22x (kept 0.98).
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.options.enable_profiling = profile_dir is not None
        self.threads = threads
        self.providers = providers
        self.profile_dir = profile_dir
        self.sessions: dict[str, ort.InferenceSession] = {}  # graph name -> its session, for the op profiler

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        path = bundle / graph.artifact
        where = f"{path} (graph {graph.name!r})"
        if self.profile_dir is not None:
            # A file per graph: onnxruntime names a profile by its prefix and the second the session ends,
            # so sessions sharing a prefix and ending within one second would write into one file.
            self.options.profile_file_prefix = str(self.profile_dir / graph.name)
        try:
            session = ort.InferenceSession(str(path), self.options, providers=list(self.providers))
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

    def describe(self) -> str:
        return f"onnxruntime {ort.__version__} {'+'.join(self.providers)}, threads={self.threads or 'default'}"


def create(*, threads: int | None = None, device: Device | None = None) -> OnnxRuntimeBackend:
    providers = (device.providers if device else None) or DEFAULT_PROVIDERS
    return OnnxRuntimeBackend(threads, tuple(providers))
