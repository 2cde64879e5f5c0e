"""The bundle manifest: parsed into dataclasses and validated at this one boundary.

The manifest is the contract between exporter, runtime and the Android app;
docs/bundle.md is its specification. Everything here is plain Python so a
device needs no torch to read a bundle.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "BundleError",
    "TensorSpec",
    "Graph",
    "DispatchPath",
    "Dispatch",
    "BlockDispatch",
    "BlockStep",
    "Segment",
    "CachedPath",
    "Calibration",
    "BuildPlan",
    "EngineProfile",
    "Preprocessing",
    "Artifact",
    "Manifest",
    "read_manifest",
]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 knows only the argmax rule
MANIFEST_FILE = "manifest.json"
TARGETS = ("onnx", "executorch", "coreml", "tensorrt")
DTYPES = ("float32",)
DISPATCH_RULES = {1: ("argmax",), 2: ("argmax", "policy", "gated")}
PRECISIONS = ("fp32", "fp16", "int8")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(ValueError):
    """A bundle that cannot be trusted; the message names the offending file."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Graph:
    """One static graph: an artifact file, and the method inside it for multi-method formats."""

    name: str
    artifact: str
    entry: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    macs: int


@dataclass(frozen=True)
class DispatchPath:
    """One way through the network for a sample, e.g. DRNet at one resolution."""

    name: str
    graph: str
    resolution: int | None = None


@dataclass(frozen=True)
class Dispatch:
    """`argmax`: run `selector`, then paths[argmax(scores)] (DRNet, Resizable)."""

    rule: str
    selector: str
    paths: tuple[DispatchPath, ...]
    reference_path: str  # the static full model, baseline of every speedup

    @property
    def reference_graph(self) -> str:
        return next(p.graph for p in self.paths if p.name == self.reference_path)


@dataclass(frozen=True)
class BlockStep:
    """Residual block k: the graph that runs it, and the graph of its shortcut when it is skipped."""

    run: str | None  # None: the block never ran on the calibration set and was left out
    skip: str | None  # None: the shortcut is the identity


@dataclass(frozen=True)
class Segment:
    """Blocks first..last fused into one graph, used when all of them run."""

    graph: str
    first: int
    last: int


@dataclass(frozen=True)
class CachedPath:
    """A whole block path compiled as one graph: image in, logits out."""

    path: str  # "1" per block that runs, "0" per block skipped
    graph: str
    frequency: float  # share of calibration images that took it


@dataclass(frozen=True)
class Calibration:
    images: int
    usage: tuple[float, ...]  # per block, share of images that ran it
    coverage: float  # share of images whose path is cached


@dataclass(frozen=True)
class BlockDispatch:
    """`policy` (BlockDrop): `selector` gives K keep-probabilities up front.
    `gated` (URNet): the stem and every block graph also emit the next gate's logit.

    Either way a sample's path runs stem, then per block its run or skip graph
    (or a fused segment, or a cached whole path), then the head.
    """

    rule: str
    selector: str | None  # policy graph; None for gated
    stem: str
    head: str | None  # None for gated: the last block graphs emit logits
    blocks: tuple[BlockStep, ...]
    segments: tuple[Segment, ...]
    cached_paths: tuple[CachedPath, ...]
    calibration: Calibration | None
    reference: str  # graph of the static full model, baseline of every speedup

    @property
    def reference_graph(self) -> str:
        return self.reference


@dataclass(frozen=True)
class Preprocessing:
    """uint8 RGB images become float32 NCHW: resize to `resolution`, scale to [0, 1], then (x - mean) / std."""

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "bilinear"


@dataclass(frozen=True)
class Artifact:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class EngineProfile:
    """A TensorRT optimization profile: the shapes one input may take."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """How the device compiles the bundle's graphs (TensorRT builds engines; Core ML picks units).

    TensorRT engines are not portable, so the bundle ships ONNX plus this plan
    and the device builds, then caches, one engine per graph at first load.
    """

    precision: str  # fp32 | fp16 | int8
    workspace_mb: int | None = None  # TensorRT builder memory pool
    compute_units: str | None = None  # Core ML: ALL | CPU_ONLY | CPU_AND_GPU | CPU_AND_NE
    calibration: str | None = None  # int8: an artifact (.npy, normalized NCHW) to calibrate with
    profiles: dict[str, tuple[EngineProfile, ...]] | None = None  # TensorRT: per graph


@dataclass(frozen=True)
class Manifest:
    format_version: int
    family: str
    target: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    graphs: dict[str, Graph]
    dispatch: Dispatch | BlockDispatch
    artifacts: dict[str, Artifact]
    producer: dict[str, str]
    macs_convention: str = "conv+linear multiply-accumulates per image, batch 1"
    build: BuildPlan | None = None  # targets compiled on the device: tensorrt, coreml

    def path_macs(self, path: DispatchPath) -> int:
        """MACs of one sample taking `path`, selector included."""
        return self.graphs[self.dispatch.selector].macs + self.graphs[path.graph].macs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class _Reader:
    """Typed field access that names the file and the field in every error."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> BundleError:
        return BundleError(f"{self.source}: {where}: {problem}")

    def fields(self, data: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object, got {type(data).__name__}")
        missing = required - data.keys()
        if missing:
            raise self.fail(where, f"missing field(s) {sorted(missing)}")
        unknown = data.keys() - required - optional
        if unknown:
            raise self.fail(where, f"unknown field(s) {sorted(unknown)}")
        return data

    def typed(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where, f"expected {expected}, got {value!r}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not self.typed(value, str, where):
            raise self.fail(where, "must not be empty")
        return value

    def count(self, value: Any, where: str, minimum: int = 0) -> int:
        if self.typed(value, int, where) < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return value

    def choice(self, value: Any, options: tuple, where: str) -> Any:
        if value not in options:
            raise self.fail(where, f"{value!r} is not one of {list(options)}")
        return value

    def floats(self, value: Any, where: str, length: int) -> tuple[float, ...]:
        items = self.typed(value, list, where)
        if len(items) != length:
            raise self.fail(where, f"expected {length} numbers, got {len(items)}")
        return tuple(float(self.typed(v, (int, float), f"{where}[{i}]")) for i, v in enumerate(items))

    def tensor(self, data: Any, where: str) -> TensorSpec:
        data = self.fields(data, where, {"name", "shape", "dtype"})
        shape = self.typed(data["shape"], list, f"{where}.shape")
        if not shape:
            raise self.fail(f"{where}.shape", "must have at least one dimension")
        return TensorSpec(
            name=self.text(data["name"], f"{where}.name"),
            shape=tuple(self.count(d, f"{where}.shape[{i}]", 1) for i, d in enumerate(shape)),
            dtype=self.choice(data["dtype"], DTYPES, f"{where}.dtype"),
        )

    def tensors(self, data: Any, where: str) -> tuple[TensorSpec, ...]:
        items = self.typed(data, list, where)
        if not items:
            raise self.fail(where, "must list at least one tensor")
        return tuple(self.tensor(item, f"{where}[{i}]") for i, item in enumerate(items))


def _parse(data: Any, source: Path) -> Manifest:
    r = _Reader(source)
    top = r.fields(
        data, "manifest",
        {"format_version", "family", "target", "classes", "preprocessing", "graphs", "dispatch", "artifacts",
         "producer", "macs_convention"},
        frozenset({"build"}),
    )
    version = r.typed(top["format_version"], int, "format_version")
    if version not in READABLE_VERSIONS:
        raise r.fail("format_version", f"unknown format_version {version}; this runtime reads {list(READABLE_VERSIONS)}")

    classes = r.typed(top["classes"], list, "classes")
    if not classes:
        raise r.fail("classes", "must list at least one class")
    classes = tuple(r.text(c, f"classes[{i}]") for i, c in enumerate(classes))

    pre = r.fields(top["preprocessing"], "preprocessing", {"resolution", "mean", "std", "resize"})
    preprocessing = Preprocessing(
        resolution=r.count(pre["resolution"], "preprocessing.resolution", 1),
        mean=r.floats(pre["mean"], "preprocessing.mean", 3),
        std=r.floats(pre["std"], "preprocessing.std", 3),
        resize=r.choice(pre["resize"], ("bilinear",), "preprocessing.resize"),
    )
    if any(s <= 0 for s in preprocessing.std):
        raise r.fail("preprocessing.std", f"must be positive, got {list(preprocessing.std)}")

    artifacts = {}
    for file, entry in r.typed(top["artifacts"], dict, "artifacts").items():
        where = f"artifacts[{file!r}]"
        if Path(file).name != file or file in (".", "..", MANIFEST_FILE):
            raise r.fail(where, "must be a plain file name inside the bundle")
        entry = r.fields(entry, where, {"sha256", "bytes"})
        digest = r.typed(entry["sha256"], str, f"{where}.sha256")
        if not _SHA256.fullmatch(digest):
            raise r.fail(f"{where}.sha256", f"not a lowercase hex sha256: {digest!r}")
        artifacts[file] = Artifact(digest, r.count(entry["bytes"], f"{where}.bytes"))

    graphs = {}
    graph_items = r.typed(top["graphs"], dict, "graphs")
    if not graph_items:
        raise r.fail("graphs", "must hold at least one graph")
    for name, entry in graph_items.items():
        where = f"graphs[{name!r}]"
        entry = r.fields(entry, where, {"name", "artifact", "entry", "inputs", "outputs", "macs"})
        if entry["name"] != name:
            raise r.fail(f"{where}.name", f"{entry['name']!r} differs from its key")
        artifact = r.text(entry["artifact"], f"{where}.artifact")
        if artifact not in artifacts:
            raise r.fail(f"{where}.artifact", f"{artifact!r} is not listed in artifacts")
        method = entry["entry"]
        if method is not None:
            r.text(method, f"{where}.entry")
        graphs[name] = Graph(
            name=name,
            artifact=artifact,
            entry=method,
            inputs=r.tensors(entry["inputs"], f"{where}.inputs"),
            outputs=r.tensors(entry["outputs"], f"{where}.outputs"),
            macs=r.count(entry["macs"], f"{where}.macs"),
        )

    d = r.typed(top["dispatch"], dict, "dispatch")
    rule = r.choice(d.get("rule"), DISPATCH_RULES[version], "dispatch.rule")
    dispatch = _parse_argmax(r, d, graphs, classes) if rule == "argmax" else _parse_blocks(r, d, graphs, classes)

    producer = r.typed(top["producer"], dict, "producer")
    return Manifest(
        format_version=version,
        family=r.text(top["family"], "family"),
        target=r.choice(top["target"], TARGETS, "target"),
        classes=classes,
        preprocessing=preprocessing,
        graphs=graphs,
        dispatch=dispatch,
        artifacts=artifacts,
        producer={str(k): str(v) for k, v in producer.items()},
        macs_convention=r.text(top["macs_convention"], "macs_convention"),
        build=_parse_build(r, top.get("build"), graphs, artifacts) if top.get("build") is not None else None,
    )


def _parse_argmax(r: _Reader, d: dict, graphs: dict[str, Graph], classes: tuple[str, ...]) -> Dispatch:
    d = r.fields(d, "dispatch", {"rule", "selector", "paths", "reference_path"})
    rule = d["rule"]
    selector = r.choice(d["selector"], tuple(graphs), "dispatch.selector")
    paths = []
    for i, entry in enumerate(r.typed(d["paths"], list, "dispatch.paths")):
        where = f"dispatch.paths[{i}]"
        entry = r.fields(entry, where, {"name", "graph"}, frozenset({"resolution"}))
        resolution = entry.get("resolution")
        paths.append(
            DispatchPath(
                name=r.text(entry["name"], f"{where}.name"),
                graph=r.choice(entry["graph"], tuple(graphs), f"{where}.graph"),
                resolution=None if resolution is None else r.count(resolution, f"{where}.resolution", 1),
            )
        )
    if not paths:
        raise r.fail("dispatch.paths", "must list at least one path")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise r.fail("dispatch.paths", f"path names repeat: {names}")
    scores = graphs[selector].outputs[0].shape
    if scores[-1] != len(paths):
        raise r.fail("dispatch.selector", f"{selector!r} scores {scores[-1]} paths but {len(paths)} are listed")
    for path in paths:
        logits = graphs[path.graph].outputs[0].shape
        if logits[-1] != len(classes):
            raise r.fail(f"graphs[{path.graph!r}].outputs[0]", f"{logits[-1]} logits for {len(classes)} classes")
    return Dispatch(rule, selector, tuple(paths), r.choice(d["reference_path"], tuple(names), "dispatch.reference_path"))


def _parse_blocks(r: _Reader, d: dict, graphs: dict[str, Graph], classes: tuple[str, ...]) -> BlockDispatch:
    gated = d["rule"] == "gated"
    d = r.fields(
        d, "dispatch",
        {"rule", "selector", "stem", "head", "blocks", "segments", "cached_paths", "calibration", "reference"},
    )
    names = tuple(graphs)

    def graph_or_none(value, where):
        return None if value is None else r.choice(value, names, where)

    selector = graph_or_none(d["selector"], "dispatch.selector")
    if (selector is None) != gated:
        raise r.fail("dispatch.selector", "a policy dispatch needs a selector graph; a gated one has none")
    head = graph_or_none(d["head"], "dispatch.head")
    if (head is None) != gated:
        raise r.fail("dispatch.head", "a policy dispatch needs a head graph; in a gated one the last blocks emit logits")
    steps = []
    for i, entry in enumerate(r.typed(d["blocks"], list, "dispatch.blocks")):
        entry = r.fields(entry, f"dispatch.blocks[{i}]", {"run", "skip"})
        steps.append(BlockStep(graph_or_none(entry["run"], f"dispatch.blocks[{i}].run"),
                               graph_or_none(entry["skip"], f"dispatch.blocks[{i}].skip")))
    if not steps:
        raise r.fail("dispatch.blocks", "must list at least one block")
    if gated and any(step.run is None or step.skip is None for step in steps):
        raise r.fail("dispatch.blocks", "a gated dispatch needs run and skip graphs for every block: they emit the gates")
    segments = []
    for i, entry in enumerate(r.typed(d["segments"], list, "dispatch.segments")):
        where = f"dispatch.segments[{i}]"
        entry = r.fields(entry, where, {"graph", "first", "last"})
        first, last = r.count(entry["first"], f"{where}.first"), r.count(entry["last"], f"{where}.last")
        if not first < last < len(steps):
            raise r.fail(where, f"blocks {first}..{last} are not a run of at least two of the {len(steps)} blocks")
        segments.append(Segment(r.choice(entry["graph"], names, f"{where}.graph"), first, last))
    cached = []
    for i, entry in enumerate(r.typed(d["cached_paths"], list, "dispatch.cached_paths")):
        where = f"dispatch.cached_paths[{i}]"
        entry = r.fields(entry, where, {"path", "graph", "frequency"})
        path = r.text(entry["path"], f"{where}.path")
        if len(path) != len(steps) or set(path) - {"0", "1"}:
            raise r.fail(f"{where}.path", f"{path!r} is not a string of {len(steps)} '0'/'1' characters")
        frequency = float(r.typed(entry["frequency"], (int, float), f"{where}.frequency"))
        cached.append(CachedPath(path, r.choice(entry["graph"], names, f"{where}.graph"), frequency))
    calibration = None
    if d["calibration"] is not None:
        c = r.fields(d["calibration"], "dispatch.calibration", {"images", "usage", "coverage"})
        calibration = Calibration(
            r.count(c["images"], "dispatch.calibration.images", 1),
            r.floats(c["usage"], "dispatch.calibration.usage", len(steps)),
            float(r.typed(c["coverage"], (int, float), "dispatch.calibration.coverage")),
        )
    reference = r.choice(d["reference"], names, "dispatch.reference")
    if graphs[reference].outputs[0].shape[-1] != len(classes):
        raise r.fail(f"graphs[{reference!r}].outputs[0]", f"the reference graph must emit {len(classes)} logits")
    return BlockDispatch(
        d["rule"], selector, r.choice(d["stem"], names, "dispatch.stem"), head, tuple(steps), tuple(segments), tuple(cached), calibration, reference
    )


def _parse_build(r: _Reader, data: Any, graphs: dict[str, Graph], artifacts: dict[str, Artifact]) -> BuildPlan:
    data = r.fields(data, "build", {"precision"}, frozenset({"workspace_mb", "compute_units", "calibration", "profiles"}))
    precision = r.choice(data["precision"], PRECISIONS, "build.precision")
    workspace = data.get("workspace_mb")
    if workspace is not None:
        r.count(workspace, "build.workspace_mb", 1)
    units = data.get("compute_units")
    if units is not None:
        r.choice(units, COMPUTE_UNITS, "build.compute_units")
    calibration = data.get("calibration")
    if calibration is not None and calibration not in artifacts:
        raise r.fail("build.calibration", f"{calibration!r} is not listed in artifacts")
    if precision == "int8" and calibration is None and data.get("profiles") is not None:
        raise r.fail("build.calibration", "int8 engines need a calibration artifact")
    profiles = None
    if data.get("profiles") is not None:
        profiles = {}
        for name, entries in r.typed(data["profiles"], dict, "build.profiles").items():
            where = f"build.profiles[{name!r}]"
            if name not in graphs:
                raise r.fail(where, f"{name!r} is not a graph")
            inputs = {spec.name: spec for spec in graphs[name].inputs}
            parsed = []
            for i, entry in enumerate(r.typed(entries, list, where)):
                at = f"{where}[{i}]"
                entry = r.fields(entry, at, {"input", "min", "opt", "max"})
                spec = inputs.get(entry["input"])
                if spec is None:
                    raise r.fail(f"{at}.input", f"{entry['input']!r} is not an input of {name!r}")
                shapes = []
                for key in ("min", "opt", "max"):
                    dims = r.typed(entry[key], list, f"{at}.{key}")
                    if len(dims) != len(spec.shape):
                        raise r.fail(f"{at}.{key}", f"rank {len(dims)} differs from the input's {len(spec.shape)}")
                    shapes.append(tuple(r.count(d, f"{at}.{key}", 1) for d in dims))
                if not all(a <= b <= c for a, b, c in zip(*shapes)):
                    raise r.fail(at, f"needs min <= opt <= max per dimension, got {shapes}")
                parsed.append(EngineProfile(entry["input"], *shapes))
            profiles[name] = tuple(parsed)
    return BuildPlan(precision, workspace, units, calibration, profiles)


def read_manifest(bundle: str | Path) -> Manifest:
    """Parse and validate `bundle/manifest.json`; artifacts are checked by `runtime.bundle`."""
    source = Path(bundle) / MANIFEST_FILE
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle}: not a bundle directory")
    if not source.is_file():
        raise BundleError(f"{source}: manifest is missing; is {bundle} a bundle written by `python -m exporter`?")
    try:
        data = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{source}: not valid JSON ({error})") from None
    return _parse(data, source)
