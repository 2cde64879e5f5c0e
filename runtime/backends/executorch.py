"""ExecuTorch backend: methods of a multi-method .pte, run through `executorch.runtime`.

Its Python bindings exchange torch tensors, so this backend, alone with the
torch reference, imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime

from runtime.manifest import Graph


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, threads: int | None) -> None:
        # The XNNPACK thread pool must be sized before any method loads:
        # resizing it under a loaded method crashes the process.
        if threads and threads != portable_lib._threadpool_get_thread_count():
            portable_lib._unsafe_reset_threadpool(threads)
        self.runtime = Runtime.get()
        self.programs: dict[Path, object] = {}

    def load(self, bundle: Path, graph: Graph):
        path = bundle / graph.artifact
        if path not in self.programs:
            self.programs[path] = self.runtime.load_program(path)
        program = self.programs[path]
        if graph.entry not in program.method_names:
            raise ValueError(f"{path}: has no method {graph.entry!r}; it has {sorted(program.method_names)}")
        method = program.load_method(graph.entry)

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return [out.numpy() for out in method.execute([torch.from_numpy(x) for x in inputs])]

        return run

    def describe(self) -> str:
        from importlib.metadata import version

        return f"executorch {version('executorch')} (XNNPACK), threads={portable_lib._threadpool_get_thread_count()}"


def create(*, threads: int | None = None) -> ExecuTorchBackend:
    return ExecuTorchBackend(threads)
