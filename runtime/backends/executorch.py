"""ExecuTorch backend: the methods of a multi-method .pte, run through `executorch.runtime`.

Each program is loaded once and its methods kept. Its Python bindings
exchange torch tensors, so this backend alone imports torch.

XNNPACK packs each method's weights for itself when the method loads: the
.pte stores shared weights once, but the executorch 1.5.1 wheel is built
without XNNPACK's weight cache (EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE, off in
ExecuTorch's default and pybind presets) and its Python API passes no backend
options, so a loaded method holds its own packed copy. Android's and iOS's
builds have the cache on (docs/bundle.md, "Weights in memory on the device");
the pip runtime's figure: benchmarks/results/runtime.md, section 5.

With `etdump=True` each method records ExecuTorch's event trace (ETDump):
every XNNPACK op and portable kernel, timed per call. A trace is kept per
program, and the Inspector lines up a trace's runs event by event, so each
method then gets a program of its own: one trace per method, for
runtime/profile/ops.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.backends import check_signature
from runtime.backends.quiet import without_cpuinfo_lines, without_kernel_preference_notice
from runtime.format.devices import Device
from runtime.format.fields import BundleError, Graph
from runtime.format.manifest import Manifest


with without_kernel_preference_notice():
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Program, Runtime

PROGRAM_MAGIC = b"ET"  # bytes 4-5 of every .pte: the flatbuffer file identifier starts "ET"


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, threads: int | None, *, etdump: bool = False) -> None:
        with without_cpuinfo_lines():  # the thread pool probes the CPU on first use
            # The XNNPACK thread pool must be sized before any method loads:
            # resizing it under a loaded method crashes the process.
            if threads and threads != portable_lib._threadpool_get_thread_count():
                portable_lib._unsafe_reset_threadpool(threads)
            self.runtime = Runtime.get()
        self.etdump = etdump
        self.programs: dict[tuple[Path, str | None], Program] = {}  # by artifact, and by method when tracing

    def load(self, bundle: Path, manifest: Manifest, graph: Graph):
        path = bundle / graph.artifact
        where = f"{path} (graph {graph.name!r}, method {graph.entry!r})"
        program = self._program(path, graph.entry)
        if graph.entry not in program.method_names:
            raise BundleError(f"{where}: the program has no such method; it has {sorted(program.method_names)}")
        meta = program.metadata(graph.entry)
        check_signature(
            where, graph, manifest.max_batch,
            [(None, tuple(meta.input_tensor_meta(i).sizes())) for i in range(meta.num_inputs())],
            [(None, tuple(meta.output_tensor_meta(i).sizes())) for i in range(meta.num_outputs())],
        )
        try:
            with without_cpuinfo_lines():
                method = program.load_method(graph.entry)
        except RuntimeError as error:
            raise BundleError(f"{where}: ExecuTorch cannot load the method: {error}") from error
        execute = method.execute

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            # torch wraps only writable arrays; a caller's read-only batch is copied, not aliased.
            tensors = [torch.from_numpy(x if x.flags.writeable else x.copy()) for x in inputs]
            return [out.numpy() for out in execute(tensors)]

        return run

    def _program(self, path: Path, method: str) -> Program:
        key = (path, method if self.etdump else None)
        if key not in self.programs:
            # A header that is not ExecuTorch's makes the runtime log undecodable bytes, which aborts
            # the process; the sha256 check passed, so this is a deliberately altered or foreign file.
            with open(path, "rb") as stream:
                if stream.read(8)[4:6] != PROGRAM_MAGIC:
                    raise BundleError(f"{path}: not an ExecuTorch program (no ET file identifier in its header)")
            try:
                self.programs[key] = self.runtime.load_program(path, enable_etdump=self.etdump)
            except RuntimeError as error:
                raise BundleError(f"{path}: ExecuTorch cannot load the program: {error}") from error
        return self.programs[key]

    def write_etdumps(self, directory: Path) -> list[Path]:
        """Each loaded method's event trace, as `<artifact stem>.<method>.etdp` in `directory`."""
        if not self.etdump:
            raise RuntimeError("this backend records no ETDump; create it with etdump=True")
        written = []
        for (path, method), program in self.programs.items():
            trace = directory / f"{path.stem}.{method}.etdp"
            program.write_etdump_result_to_file(str(trace), str(trace.with_suffix(".debug.bin")))
            written.append(trace)
        return written

    def describe(self) -> str:
        from importlib.metadata import version

        return f"executorch {version('executorch')} (XNNPACK), threads={portable_lib._threadpool_get_thread_count()}"


def create(*, threads: int | None = None, device: Device | None = None) -> ExecuTorchBackend:
    return ExecuTorchBackend(threads)
