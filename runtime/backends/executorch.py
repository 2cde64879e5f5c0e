"""ExecuTorch backend: the methods of a multi-method .pte, run through `executorch.runtime`.

Each program is loaded once and its methods kept. Its Python bindings
exchange torch tensors, so this backend alone imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Program, Runtime

from runtime.backends import check_signature
from runtime.devices import Device
from runtime.manifest import BundleError, Graph, Manifest


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, threads: int | None) -> None:
        # The XNNPACK thread pool must be sized before any method loads:
        # resizing it under a loaded method crashes the process.
        if threads and threads != portable_lib._threadpool_get_thread_count():
            portable_lib._unsafe_reset_threadpool(threads)
        self.runtime = Runtime.get()
        self.programs: dict[Path, Program] = {}

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        path = bundle / graph.artifact
        where = f"{path} (graph {graph.name!r}, method {graph.entry!r})"
        program = self._program(path)
        if graph.entry not in program.method_names:
            raise BundleError(f"{where}: the program has no such method; it has {sorted(program.method_names)}")
        meta = program.metadata(graph.entry)
        check_signature(
            where, graph, manifest.max_batch,
            [(None, tuple(meta.input_tensor_meta(i).sizes())) for i in range(meta.num_inputs())],
            [(None, tuple(meta.output_tensor_meta(i).sizes())) for i in range(meta.num_outputs())],
        )
        try:
            method = program.load_method(graph.entry)
        except RuntimeError as error:
            raise BundleError(f"{where}: ExecuTorch cannot load the method: {error}") from error
        execute = method.execute

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return [out.numpy() for out in execute([torch.from_numpy(x) for x in inputs])]

        return run

    def _program(self, path: Path) -> Program:
        if path not in self.programs:
            try:
                self.programs[path] = self.runtime.load_program(path)
            except RuntimeError as error:
                raise BundleError(f"{path}: ExecuTorch cannot load the program: {error}") from error
        return self.programs[path]

    def describe(self) -> str:
        from importlib.metadata import version

        return f"executorch {version('executorch')} (XNNPACK), threads={portable_lib._threadpool_get_thread_count()}"


def create(*, threads: int | None = None, device: Device | None = None) -> ExecuTorchBackend:
    return ExecuTorchBackend(threads)
