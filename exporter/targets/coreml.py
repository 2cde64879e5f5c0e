"""Core ML target: ONE multifunction ML program, each graph a function, zipped into one file.

`ct.utils.save_multifunction` stores a constant once when several functions
hold identical copies of it. That only helps if the copies survive
conversion: like the ExecuTorch target, each BN becomes a per-channel affine
after its conv, and the conv-fusion passes that would fold that affine back
into the conv weights are left out of the pipeline. The per-resolution DRNet
graphs then share their conv weights and differ only in the small BN vectors.

An .mlpackage is a directory, but a bundle artifact is one file with one
sha256, so the package ships as a zip of it: stored (uncompressed), entries
sorted, fixed timestamps, and the package's item identifiers derived from
their paths rather than random, so that exporting the same model twice gives
the same bytes. Unzipped, it is `model.mlpackage/`.

Int8 on Core ML is 8-bit weights: each conv and linear weight of an int8
graph becomes int8 (symmetric, one scale per output channel) behind a
constexpr dequantize op, and the graph computes in fp16 like the others.
Identical int8 weights in several functions are stored once, as float ones are.

Every input's first axis is the batch, exported from torch as a dynamic dim
from 1 to `max_batch`. A single-input function (the predictor, every DRNet and
Resizable path) enumerates its batch sizes (runtime.backends.coreml.enumerated_batches),
so each compiled shape can run on the Neural Engine; the runtime splits other
batch sizes into those. Functions with several inputs take a `ct.RangeDim`
(default 1), since Core ML enumerates shapes for one input only: the Neural
Engine runs them at batch 1.

    from exporter.targets import coreml
    written = coreml.write(split.graphs, Path("bundle"), device=get_device("iphone-15"), max_batch=8, precision="fp16")
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from exporter.batchnorm import batchnorm_to_affine
from exporter.graphs import ExportGraph
from exporter.targets import Int8Inputs, Written, graph_precision
from exporter.targets.batch import batched_example
from runtime.backends.coreml import enumerated_batches
from runtime.backends.quiet import without_coremltools_import_notices
from runtime.format.devices import Device
from runtime.format.manifest import BuildPlan

with without_coremltools_import_notices():
    import coremltools as ct
    import coremltools.optimize as cto

__all__ = ["PACKAGE", "ARCHIVE", "write", "zip_package"]

PACKAGE = "model.mlpackage"
ARCHIVE = f"{PACKAGE}.zip"
# Multifunction packages need the iOS 18 / macOS 15 specification.
DEPLOYMENT_TARGET = ct.target.iOS18
# Compute precision per graph precision: Core ML computes int8 graphs (8-bit weights) in fp16.
PRECISIONS = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32, "int8": ct.precision.FLOAT16}
QUANTIZE_WEIGHTS = "compression::linear_quantize_weights"  # the pass behind cto.coreml.linear_quantize_weights
# Every conv and linear weight, as the other targets' int8 does (weight_threshold 0: coremltools'
# default, 2048 elements, would leave the smaller convs in fp16); BN affines and biases stay fp16.
_INT8_WEIGHT = cto.coreml.OpLinearQuantizerConfig(
    mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
)
INT8_WEIGHTS = cto.coreml.OptimizationConfig(op_type_configs={"conv": _INT8_WEIGHT, "linear": _INT8_WEIGHT})
# Passes that fold a conv's following scale and shift into its weights, which
# would make every resolution's conv weights distinct.
CONV_FUSIONS = {
    "common::fuse_conv_scale",
    "common::fuse_conv_bias",
    "common::fuse_conv_batchnorm",
    "common::fuse_elementwise_to_batchnorm",
}
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can hold


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Hide coremltools' narration, which it lets no caller turn off: a progress bar per
    pass pipeline, and deprecation warnings about its own internals. Failures still raise."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class DistinctOutputs(nn.Module):
    """`module` with every output that is an input unchanged (URNet's identity skips) multiplied by 1.

    coremltools cannot give a function input a second name as an output
    (its name sanitizer asserts); the no-op multiply is an op of its own,
    which conversion keeps because its result is a function output.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        outputs = self.module(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(out * 1.0 if any(out is x for x in inputs) else out for out in outputs)


def _convert(graph: ExportGraph, precision: str, max_batch: int) -> ct.models.MLModel:
    """`graph` as a one-function ML program in `precision`: fp32, fp16, or int8 (8-bit weights, fp16 compute)."""
    module = DistinctOutputs(batchnorm_to_affine(graph.module)).eval()
    examples, dynamic_shapes = batched_example(graph, max_batch)
    if dynamic_shapes is not None:
        dynamic_shapes = (dynamic_shapes,)  # torch.export sees DistinctOutputs' *inputs as one tuple argument
    program = torch.export.export(module, examples, dynamic_shapes=dynamic_shapes).run_decompositions({})
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(CONV_FUSIONS)
    if precision == "int8":
        # The pass that cto.coreml.linear_quantize_weights applies, run last in this pipeline: that function
        # converts the model again through the default pipeline, whose fusions would fold the BN affines kept
        # here into the convs (coremltools 9.0 even fails on them: fuse_elementwise_to_batchnorm's dtypes).
        pipeline.append_pass(QUANTIZE_WEIGHTS)
        pipeline.set_options(QUANTIZE_WEIGHTS, {"config": INT8_WEIGHTS})
    # Tensors cross the bundle boundary as float32 whatever the compute precision;
    # left implicit, an fp16 program would take and return fp16.
    enumerate_batches = len(graph.example_inputs) == 1
    inputs = [
        ct.TensorType(name=name, shape=_batched_shape(x, max_batch, enumerate_batches), dtype=np.float32)
        for name, x in zip(graph.input_names, graph.example_inputs)
    ]
    outputs = [ct.TensorType(name=name, dtype=np.float32) for name in graph.output_names]
    with _quietly():
        return ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=DEPLOYMENT_TARGET,
            inputs=inputs,
            outputs=outputs,
            compute_precision=PRECISIONS[precision],
            pass_pipeline=pipeline,
            skip_model_load=True,  # compiling needs macOS, and only the spec is saved
        )


def _batched_shape(
    example: Tensor, max_batch: int, enumerate_batches: bool
) -> ct.Shape | ct.EnumeratedShapes | tuple[int, ...]:
    """`example`'s shape with its batch axis over 1..max_batch: enumerated sizes, or a range; static at 1."""
    rest = tuple(example.shape[1:])
    if max_batch == 1:
        return (1, *rest)
    if enumerate_batches:
        return ct.EnumeratedShapes(shapes=[(b, *rest) for b in enumerated_batches(max_batch)], default=(1, *rest))
    return ct.Shape((ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1), *rest))


def stable_identifiers(package: Path) -> None:
    """Replace the random UUIDs coremltools gives the package's items with UUIDs derived from their paths."""
    manifest_file = package / "Manifest.json"
    manifest = json.loads(manifest_file.read_text())
    items = manifest["itemInfoEntries"]
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, item["path"])).upper() for old, item in items.items()}
    manifest["itemInfoEntries"] = {renamed[old]: item for old, item in items.items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_file.write_text(json.dumps(manifest, indent=4, sort_keys=True))


def zip_package(package: Path, archive: Path) -> None:
    """Zip the directory `package` into `archive` so that unzipping gives back `package.name/`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        for path in sorted(p for p in package.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(f"{package.name}/{path.relative_to(package).as_posix()}", ZIP_TIMESTAMP)
            entry.external_attr = 0o644 << 16
            zipped.writestr(entry, path.read_bytes())


def write(
    graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None, max_batch: int,
    precision: str = "fp16", int8: Int8Inputs | None = None,
) -> Written:
    """All graphs as the functions of one package; those named in `int8` with 8-bit weights, the others in
    `precision`, fp16 where that is int8. The int8 graphs' calibration inputs go unused: Core ML's int8 is
    weights only (runtime.format.targets), computed in fp16.
    """
    int8 = int8 or {}
    with tempfile.TemporaryDirectory(prefix="coreml-") as scratch:
        scratch = Path(scratch)
        functions = ct.utils.MultiFunctionDescriptor()
        for graph in tqdm(graphs, desc="coreml functions", leave=False, disable=None):
            single = scratch / f"{graph.name}.mlpackage"
            _convert(graph, graph_precision("coreml", precision, graph.name in int8), max_batch).save(str(single))
            functions.add_function(str(single), src_function_name="main", target_function_name=graph.name)
        functions.default_function_name = graphs[0].name
        with _quietly():
            ct.utils.save_multifunction(functions, str(scratch / PACKAGE))
        stable_identifiers(scratch / PACKAGE)
        zip_package(scratch / PACKAGE, directory / ARCHIVE)
    build = BuildPlan(precision=precision, compute_units=(device.compute_units if device else None) or "ALL")
    return Written({graph.name: (ARCHIVE, graph.name) for graph in graphs}, build)
