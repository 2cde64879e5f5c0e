"""ONNX target: one .onnx per graph, batch axis `batch` from 1 to max_batch, checked by onnx.checker.

The graphs of one bundle repeat each other's weights: a block graph holds the
same convolutions as the full model, a cached path the same as its blocks, a
resolution the same as the others but for its BN set. So BN stays a
per-channel affine (exporter/batchnorm.py; onnxruntime fuses it back into the
conv at load), every sizeable initializer moves into one shared external-data
file, each distinct tensor stored once, and the .onnx files keep only their
structure. onnxruntime resolves the file relative to each .onnx, as the ONNX
external-data convention specifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
import weakref
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from onnx.external_data_helper import set_external_data
from tqdm import tqdm

from exporter.batchnorm import batchnorm_to_affine
from exporter.graphs import ExportGraph
from exporter.quantize.onnx_qdq import quantize_qdq
from exporter.targets import Int8Inputs, Written
from exporter.targets.batch import BATCH, batched_example
from runtime.format.devices import Device
from runtime.profile.timing import measure

__all__ = [
    "OPSET", "WEIGHTS_FILE", "IfChain", "compose_if_chain", "export_graphs", "export_onnx", "if_chain",
    "store_weights_once", "time_on_host", "write",
]

OPSET = 18
WEIGHTS_FILE = "weights.bin"
EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay inline, as in onnx's own external-data conversion
ALIGNMENT = 64  # each tensor starts on a 64-byte boundary of the shared file


def export_onnx(graph: ExportGraph, *, max_batch: int) -> onnx.ModelProto:
    """`graph` as checked ONNX whose inputs and outputs share a symbolic first axis `batch` (1..max_batch).

    ONNX cannot bound a dim, so the range lives in the manifest; with
    `max_batch` 1 the axis is a static 1.
    """
    inputs, dynamic_shapes = batched_example(graph, max_batch)
    with warnings.catch_warnings():
        # The dynamo exporter narrates its progress through warnings and prints.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph.module,
            inputs,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    model = program.model_proto
    for node in model.graph.node:
        # Provenance: the exporting machine's stack traces and module paths, as large as
        # the graph itself and of no use to a runtime.
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    onnx.checker.check_model(model, full_check=True)
    return model


def store_weights_once(models: Mapping[str, onnx.ModelProto], weights: Path) -> None:
    """Move the initializers of `models` of at least 1 KiB into the file `weights`, each distinct tensor once.

    Tensors are matched by content (type, shape and bytes), not by name: the
    exporter names a weight after its module path, which differs between a
    block graph and the full model. If no tensor is that large, no file is written.
    """
    offsets: dict[bytes, int] = {}
    with open(weights, "wb") as stream:
        for model in models.values():
            for tensor in model.graph.initializer:
                data = tensor.raw_data
                if len(data) < EXTERNAL_THRESHOLD:
                    continue
                key = hashlib.sha256(repr((tensor.data_type, tuple(tensor.dims))).encode() + data).digest()
                if key not in offsets:
                    stream.write(b"\0" * (-stream.tell() % ALIGNMENT))
                    offsets[key] = stream.tell()
                    stream.write(data)
                set_external_data(tensor, location=weights.name, offset=offsets[key], length=len(data))
                tensor.ClearField("raw_data")
    if not offsets:
        weights.unlink()


def export_graphs(
    graphs: Sequence[ExportGraph], *, max_batch: int, int8: Int8Inputs | None = None
) -> dict[str, onnx.ModelProto]:
    """Each of `graphs` as ONNX, BN as a per-channel affine, int8 where named in `int8`; an `IfChain` graph (its
    module's `if_chain`) composed from the others rather than exported."""
    int8 = int8 or {}
    models = {
        graph.name: quantize_qdq(graph, export_onnx(graph, max_batch=max_batch), int8[graph.name]) if graph.name in int8
        else _float_onnx(graph, max_batch)
        for graph in tqdm(graphs, desc="onnx graphs", leave=False, disable=None) if if_chain(graph) is None
    }
    for graph in graphs:
        if (chain := if_chain(graph)) is not None:
            if graph.name in int8:
                raise ValueError(f"graph {graph.name!r} is composed of others, each calibrated alone: it cannot run int8")
            models[graph.name] = compose_if_chain(chain, models)
    return {graph.name: models[graph.name] for graph in graphs}


# Float exports by module and max_batch, for as long as the module lives: a split that times its options on the
# host (time_on_host) exports the graphs the writer then writes, and exporting them takes seconds each.
_EXPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _float_onnx(graph: ExportGraph, max_batch: int) -> onnx.ModelProto:
    done = _EXPORTED.setdefault(graph.module, {})
    if max_batch not in done:
        affine = dataclasses.replace(graph, module=batchnorm_to_affine(graph.module))
        done[max_batch] = export_onnx(affine, max_batch=max_batch)
    model = onnx.ModelProto()
    model.CopyFrom(done[max_batch])  # the writer moves weights out of its models
    return model


def if_chain(graph: ExportGraph) -> IfChain | None:
    """How `graph` is composed of others (its module's `if_chain`), or None where it is exported itself."""
    return getattr(graph.module, "if_chain", None)


def time_on_host(
    graphs: Sequence[ExportGraph], options: Mapping[str, Sequence[str]], *, rounds: int, max_batch: int
) -> dict[str, float]:
    """Median ms, over `rounds` interleaved rounds on onnxruntime here, of calling each option's graphs (names in
    `graphs`) in turn at batch 1 on their example inputs, exported as `write` exports them: what a choice between
    ways of running the same network (URNet's conditional graph or its per-block calls) is decided on."""
    import onnxruntime

    models = export_graphs(graphs, max_batch=max_batch)
    examples = {graph.name: graph for graph in graphs}

    def calls(names: Sequence[str]):
        runs = []
        for name in names:
            session = onnxruntime.InferenceSession(models[name].SerializeToString(), providers=["CPUExecutionProvider"])
            graph = examples[name]
            runs.append((session, {n: x.numpy() for n, x in zip(graph.input_names, graph.example_inputs)}))
        return lambda: [session.run(None, feed) for session, feed in runs]

    timings = measure({option: calls(names) for option, names in options.items()}, runs=rounds, warmup=3)
    return {option: timing.median_ms for option, timing in timings.items()}


def write(
    graphs: tuple[ExportGraph, ...], directory: Path, *, device: Device | None = None, max_batch: int,
    precision: str = "fp32", int8: Int8Inputs | None = None,
) -> Written:
    """One .onnx per graph taking 1 to `max_batch` samples, their large weights in one shared weights.bin.

    The graphs named in `int8` become static QDQ int8, each calibrated on its
    own routed inputs (exporter/quantize/onnx_qdq.py); their BN folds into
    their convolutions, so they share no weights with the others.
    """
    models = export_graphs(graphs, max_batch=max_batch, int8=int8)
    store_weights_once(models, directory / WEIGHTS_FILE)
    placement = {}
    for name, model in models.items():
        file = f"{name}.onnx"
        onnx.save(model, str(directory / file))
        onnx.checker.check_model(str(directory / file), full_check=True)
        placement[name] = (file, None)
    return Written(placement)


# ---------------------------------------------------------------- conditional graphs


@dataclass(frozen=True)
class IfChain:
    """A graph the ONNX writers compose from a split's other graphs instead of exporting it: URNet's conditional
    network, one `If` per block. torch.cond through the dynamo exporter gives the same graph, but took about 20 s per
    block to export on the export host (3 minutes for ResNet-20's nine), and these branches are graphs the bundle
    exports anyway.

    `stem` maps (image, scale) to (features, gate logit); each block's (run, skip) graphs map (features, scale) to
    (features, next gate logit), or to logits for the last. The composed graph takes (image, scale, force) and
    emits (logits, gates): force[:, k] < 0 leaves block k to its gate (open when its logit is > 0), 0 or 1 forces
    it; gates[:, k] is 1.0 where block k ran. An `If` takes one condition per call: block k runs when every sample
    of the batch keeps it, its shortcut when none does, and a mixed batch runs both and keeps each sample's own.
    TensorRT's ONNX parser maps `If` to IIfConditional, whose branches must emit equal shapes: run and skip do.
    """

    stem: str
    blocks: tuple[tuple[str, str], ...]


def compose_if_chain(chain: IfChain, models: Mapping[str, onnx.ModelProto]) -> onnx.ModelProto:
    """The conditional graph of `chain` from the exported ONNX `models` of its stem and blocks."""
    stem = models[chain.stem]
    nodes, initializers = [], {}

    def hoist(source: str) -> dict[str, str]:
        """The initializers of `source` under names of their own in the main graph (stored once each by content)."""
        renamed = {}
        for tensor in models[source].graph.initializer:
            hoisted = onnx.TensorProto()
            hoisted.CopyFrom(tensor)
            hoisted.name = renamed[tensor.name] = f"{source}/{tensor.name}"
            initializers[hoisted.name] = hoisted
        return renamed

    def body(source: str, copy: str, inputs: Sequence[str]) -> tuple[list[onnx.NodeProto], list[str]]:
        """The nodes of graph `source`, fed the values `inputs`, its values renamed for this `copy`; its outputs."""
        graph = models[source].graph
        names = {**hoisted[source], **{i.name: outer for i, outer in zip(graph.input, inputs)}}

        def rename(value: str) -> str:
            return value if not value else names.setdefault(value, f"{copy}/{value}")

        copied = []
        for node in graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                raise ValueError(f"graph {source!r} has control flow of its own; an IfChain composes plain graphs")
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = f"{copy}/{node.name}"
            new.input[:] = [rename(v) for v in node.input]
            new.output[:] = [rename(v) for v in node.output]
            copied.append(new)
        return copied, [rename(o.name) for o in graph.output]

    def outputs_like(source: str, names: Sequence[str]) -> list[onnx.ValueInfoProto]:
        typed = []
        for info, name in zip(models[source].graph.output, names):
            value = onnx.ValueInfoProto()
            value.CopyFrom(info)
            value.name = name
            typed.append(value)
        return typed

    def branch(name: str, parts: list[tuple[list[onnx.NodeProto], list[str]]], like: str, outputs: list[str]):
        """A subgraph running `parts` and handing out `outputs` (Identity-renamed so that every branch names its
        outputs alike)."""
        branch_nodes = [node for part_nodes, _ in parts for node in part_nodes]
        results = parts[-1][1] if len(parts) == 1 else outputs
        renamed = [f"{name}/{o}" for o in outputs]
        branch_nodes += [onnx.helper.make_node("Identity", [r], [n]) for r, n in zip(results, renamed)]
        return onnx.helper.make_graph(branch_nodes, name, [], outputs_like(like, renamed))

    hoisted = {source: hoist(source) for source in {chain.stem, *(g for pair in chain.blocks for g in pair)}}
    stem_nodes, (features, gate) = body(chain.stem, "stem", ["image", "scale"])
    nodes += stem_nodes
    zero, half = _constant(initializers, "zero", 0.0), _constant(initializers, "half", 0.5)
    taken = []
    for k, (run, skip) in enumerate(chain.blocks):
        b = f"block{k}"
        index = _constant(initializers, f"{b}/index", k, onnx.TensorProto.INT64)
        last = k + 1 == len(chain.blocks)
        outs = ["logits"] if last else [f"{b}/next_features", f"{b}/next_gate"]
        nodes += [
            onnx.helper.make_node("Gather", ["force", index], [f"{b}/force"], axis=1),
            onnx.helper.make_node("Less", [f"{b}/force", zero], [f"{b}/follows_gate"]),
            onnx.helper.make_node("Greater", [gate, zero], [f"{b}/gate_open"]),
            onnx.helper.make_node("Cast", [f"{b}/gate_open"], [f"{b}/gate_taken"], to=onnx.TensorProto.FLOAT),
            onnx.helper.make_node("Greater", [f"{b}/force", half], [f"{b}/forced_open"]),
            onnx.helper.make_node("Cast", [f"{b}/forced_open"], [f"{b}/forced_taken"], to=onnx.TensorProto.FLOAT),
            onnx.helper.make_node("Where", [f"{b}/follows_gate", f"{b}/gate_taken", f"{b}/forced_taken"], [f"{b}/taken"]),
            onnx.helper.make_node("Greater", [f"{b}/taken", half], [f"{b}/opened"]),
            onnx.helper.make_node("ReduceMin", [f"{b}/taken"], [f"{b}/all_taken"], keepdims=0),
            onnx.helper.make_node("ReduceMax", [f"{b}/taken"], [f"{b}/any_taken"], keepdims=0),
            onnx.helper.make_node("Greater", [f"{b}/all_taken", half], [f"{b}/all"]),
            onnx.helper.make_node("Greater", [f"{b}/any_taken", half], [f"{b}/any"]),
        ]
        ran = body(run, f"{b}/run", [features, "scale"])
        skipped = body(skip, f"{b}/skip", [features, "scale"])
        mixed_run = body(run, f"{b}/mixed/run", [features, "scale"])
        mixed_skip = body(skip, f"{b}/mixed/skip", [features, "scale"])
        mask = f"{b}/mixed/mask"
        picks = []  # each output of run where the sample kept the block, of skip where not: the mask to its rank
        for o, info, r, s in zip(outs, models[run].graph.output, mixed_run[1], mixed_skip[1]):
            rank = len(info.type.tensor_type.shape.dim)
            picks += [onnx.helper.make_node("Unsqueeze", [f"{b}/opened", _constant(
                          initializers, f"{mask}/{o}/axes", list(range(1, rank)), onnx.TensorProto.INT64)], [f"{mask}/{o}"])
                      if rank > 1 else
                      onnx.helper.make_node("Identity", [f"{b}/opened"], [f"{mask}/{o}"]),
                      onnx.helper.make_node("Where", [f"{mask}/{o}", r, s], [f"{b}/mixed/{o}"])]
        mixed = branch(f"{b}/mixed", [mixed_run, mixed_skip, (picks, None)], run, [f"{b}/mixed/{o}" for o in outs])
        none = branch(f"{b}/none", [skipped], skip, outs)
        inner = [f"{b}/inner/{o}" for o in outs]
        some_if = onnx.helper.make_node("If", [f"{b}/any"], inner, then_branch=mixed, else_branch=none)
        some = branch(f"{b}/some", [([some_if], inner)], run, outs)
        every = branch(f"{b}/every", [ran], run, outs)
        nodes.append(onnx.helper.make_node("If", [f"{b}/all"], outs, then_branch=every, else_branch=some))
        if not last:
            features, gate = outs
        taken.append(f"{b}/taken_column")
        column = _constant(initializers, f"{b}/column", [1], onnx.TensorProto.INT64)
        nodes.append(onnx.helper.make_node("Unsqueeze", [f"{b}/taken", column], [taken[-1]]))
    nodes.append(onnx.helper.make_node("Concat", taken, ["gates"], axis=1))
    image, scale = stem.graph.input
    force = onnx.helper.make_tensor_value_info("force", onnx.TensorProto.FLOAT, [BATCH, len(chain.blocks)])
    gates = onnx.helper.make_tensor_value_info("gates", onnx.TensorProto.FLOAT, [BATCH, len(chain.blocks)])
    logits = outputs_like(chain.blocks[-1][0], ["logits"])
    graph = onnx.helper.make_graph(nodes, "conditional", [image, scale, force], [*logits, gates],
                                   list(initializers.values()))
    model = onnx.helper.make_model(graph, opset_imports=stem.opset_import, ir_version=stem.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def _constant(initializers: dict[str, onnx.TensorProto], name: str, value, dtype: int = onnx.TensorProto.FLOAT) -> str:
    """An initializer of the composed graph: a scalar, or a 1-D list."""
    initializers[name] = onnx.helper.make_tensor(name, dtype, [len(value)] if isinstance(value, list) else [],
                                                 value if isinstance(value, list) else [value])
    return name
