"""ONNX Runtime backend: one InferenceSession per graph file, on the CPU provider."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.manifest import Graph

PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, threads: int | None) -> None:
        self.options = ort.SessionOptions()
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            self.options.intra_op_num_threads = threads
            self.options.inter_op_num_threads = 1
        self.threads = threads

    def load(self, bundle: Path, graph: Graph):
        session = ort.InferenceSession(str(bundle / graph.artifact), self.options, providers=[PROVIDER])
        # onnxruntime falls back silently when a provider is unavailable; refuse instead.
        if session.get_providers()[0] != PROVIDER:
            raise RuntimeError(f"{graph.artifact}: onnxruntime runs on {session.get_providers()}, not {PROVIDER}")
        names = [spec.name for spec in graph.inputs]

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, inputs)))

        return run

    def describe(self) -> str:
        return f"onnxruntime {ort.__version__} {PROVIDER}, threads={self.threads or 'default'}"


def create(*, threads: int | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(threads)
