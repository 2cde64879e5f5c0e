"""The one table of export targets: what a bundle's `target` means, and which backends run it.

The exporter's CLI choices, the manifest's validation, the runtime's default
backend and the docs' target table all read it. It names the exporter module
that writes each target as a string, so reading it needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "get_target"]


@dataclass(frozen=True)
class Target:
    name: str
    writer: str  # exporter module: write(graphs, directory, *, device, max_batch, precision, int8) -> Written
    backends: tuple[str, ...]  # runtime backends that run its artifacts, the device's choice first
    verify_backend: str | None  # the backend that checks parity on the exporting machine; None: none can
    description: str
    precisions: tuple[str, ...]  # what the writer can emit, the default (without a device entry) first
    calibrates_int8: bool = True  # int8 activations need each graph's routed inputs; False: weights only

    @property
    def backend(self) -> str:
        return self.backends[0]


TARGETS = {
    t.name: t
    for t in (
        # CPU fp16 is left out where the CPU kernels would emulate it (onnxruntime, XNNPACK on x86).
        Target("onnx", "exporter.targets.onnx", ("onnxruntime",), "onnxruntime",
               "one .onnx file per graph, opset 18, dynamic batch, weights stored once in weights.bin; "
               "int8: static QDQ, per graph", precisions=("fp32", "int8")),
        Target("executorch", "exporter.targets.executorch", ("executorch",), "executorch",
               "one multi-method .pte lowered to XNNPACK, bounded dynamic batch, weights stored once; "
               "int8: PT2E with the XNNPACK quantizer, per method", precisions=("fp32", "int8")),
        Target("coreml", "exporter.targets.coreml", ("coreml",), None,
               "one multifunction .mlpackage, weights deduplicated; predicts on macOS only; int8: 8-bit weights, "
               "fp16 compute", precisions=("fp16", "fp32", "int8"), calibrates_int8=False),
        # TensorRT bundles hold plain ONNX, so onnxruntime runs them too (parity checks, CPU fallback).
        Target("tensorrt", "exporter.targets.tensorrt", ("tensorrt", "onnxruntime"), "onnxruntime",
               "ONNX prepared for TensorRT plus a build plan; engines are built on the device; int8: symmetric "
               "QDQ, per graph", precisions=("fp16", "fp32", "int8")),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {sorted(TARGETS)}") from None
