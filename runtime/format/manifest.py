"""The bundle manifest: parsed into dataclasses and validated at this one boundary.

The manifest is the contract between exporter, runtime and the Android app;
docs/bundle.md is its specification. Each dispatch rule parses its own
section (runtime/rules), through the same FieldReader (runtime/format/fields.py).
Reading a bundle needs no torch; the rules' dispatchers, imported with their
sections, use numpy.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from runtime.format.fields import BundleError, FieldReader, Graph, TensorSpec
from runtime.format.targets import TARGETS
from runtime.rules import RULES, Dispatcher, Rule, Section

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "MANIFEST_FILE",
    "MACS_CONVENTION",
    "PRECISIONS",
    "COMPUTE_UNITS",
    "RESIZES",
    "Preprocessing",
    "Artifact",
    "EngineProfile",
    "BuildPlan",
    "PointAccuracy",
    "Accuracy",
    "Int8Calibration",
    "SelectorPrecision",
    "QuantizedCheck",
    "Quantization",
    "Manifest",
    "read_manifest",
]

FORMAT_VERSION = 7
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)  # 1 and 2 have batch-1 graphs and are read as version 3 with max_batch 1
MANIFEST_FILE = "manifest.json"
MACS_CONVENTION = "conv+linear multiply-accumulates per image"
PRECISIONS = ("fp32", "fp16", "int8")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# preprocessing.resize: each definition (docs/bundle.md, runtime/preprocess.py) and the version it exists from.
RESIZES = {"bilinear": 1, "pil-bilinear": 7}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Preprocessing:
    """uint8 RGB images become float32 NCHW: crop, resize to `resolution`, scale to [0, 1], then (x - mean) / std.

    `resize` says how (runtime/preprocess.py). "pil-bilinear" (from version 7,
    what the exporter writes) is torchvision's evaluation transform on PIL
    images, Pillow's antialiased resize; "bilinear" (every version, the only
    one before 7) crops, then resizes in float without antialiasing.
    `crop` (from version 5): the central square kept, as a fraction of the
    short side, as ImageNet models are evaluated (resize to 256, central 224:
    0.875). None: the whole image is resized, whatever its aspect.
    """

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "pil-bilinear"
    crop: float | None = None


@dataclass(frozen=True)
class Artifact:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class EngineProfile:
    """A TensorRT optimization profile: the shapes, batch included, one input may take."""

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
class PointAccuracy:
    name: str  # a path every image is made to take, or "S=<scale>"
    kind: str  # "path" | "scale"
    value: float | None  # URNet's S for a scale point
    top1: float  # in [0, 1]


@dataclass(frozen=True)
class Accuracy:
    """Top-1 of each operating point, measured by the exporter on held-out labelled images (from version 6).

    Budgets rank the points that fit by it (runtime/serving/budgets.py)."""

    source: str  # which images, and what ran them: the bundle on a backend, or the eager model
    images: int
    points: tuple[PointAccuracy, ...]


@dataclass(frozen=True)
class Int8Calibration:
    """Where int8 activation ranges came from: each graph calibrated on the inputs routed to it."""

    source: str  # e.g. "cifar10 train, first 512 images"
    images: int
    sha256: str  # of the calibration images as float32 NCHW bytes
    routed: dict[str, int]  # graph -> samples the dispatch sent it
    forced: dict[str, int]  # graph -> samples added by forcing paths, where routing left it short


@dataclass(frozen=True)
class SelectorPrecision:
    """The selector runs int8 only if, quantized, it sends enough images down the same path."""

    precision: str  # what the bundle's selector runs in
    agreement: float  # share of held-out images the int8 selector routes as fp32 does
    threshold: float  # the agreement int8 needed


@dataclass(frozen=True)
class QuantizedCheck:
    """The quantized bundle against the fp32 one, on held-out images the calibration did not use."""

    images: int
    path_agreement: float
    top1_agreement: float
    top1_fp32: float | None  # None without labels
    top1: float | None
    max_abs_diff: float  # largest |logit difference| against eager, on images that took eager's path
    tolerance: float  # the allowed difference, times max(1, the largest |logit|)


@dataclass(frozen=True)
class Quantization:
    """What the exporter changed below fp32 (from version 6), and how it checked the result."""

    precision: str  # fp16 | int8
    calibration: Int8Calibration | None  # int8 only
    selector: SelectorPrecision | None  # bundles with a selector, int8 only
    check: QuantizedCheck | None  # None where no backend runs the target here


@dataclass(frozen=True)
class Manifest:
    format_version: int
    family: str
    target: str
    classes: tuple[str, ...]
    max_batch: int  # every graph takes any batch from 1 to this
    preprocessing: Preprocessing
    graphs: dict[str, Graph]
    dispatch: Section  # the rule's own section, e.g. runtime.rules.argmax.ArgmaxDispatch
    artifacts: dict[str, Artifact]
    producer: dict[str, str]
    macs_convention: str = MACS_CONVENTION
    build: BuildPlan | None = None  # targets compiled on the device: tensorrt, coreml
    accuracy: Accuracy | None = None  # from version 6
    quantization: Quantization | None = None  # from version 6

    @property
    def rule(self) -> Rule:
        return RULES[self.dispatch.rule]

    def dispatcher(self) -> Dispatcher:
        """The rule's batch dispatcher for this bundle's section and graphs."""
        return self.rule.dispatcher(self.dispatch, self.graphs, len(self.classes))

    def to_json(self) -> str:
        data = asdict(self)
        # A section's fields marked "newer" in their metadata are written only where they differ from their default.
        section = data["dispatch"]
        unset = {f.name for f in fields(self.dispatch) if f.metadata.get("newer") and section[f.name] == f.default}
        data["dispatch"] = {"rule": self.dispatch.rule, **{k: v for k, v in section.items() if k not in unset}}
        for optional in ("build", "accuracy", "quantization"):
            if data[optional] is None:
                del data[optional]
        if self.preprocessing.crop is None:
            del data["preprocessing"]["crop"]
        for graph in data["graphs"].values():
            if graph["precision"] == "fp32":  # the default: fp32 bundles read as they did before version 6
                del graph["precision"]
        return json.dumps(data, indent=2)


def _upgrade(data: dict, r: FieldReader) -> dict:
    """A version 1 or 2 manifest in version 3's terms: batch-1 graphs, per-sample shapes, the rule's own upgrade."""
    data = copy.deepcopy(data)
    data["max_batch"] = 1
    data["macs_convention"] = data.get("macs_convention", MACS_CONVENTION)
    for name, graph in r.typed(data.get("graphs"), dict, "graphs").items():
        for side in ("inputs", "outputs"):
            for i, tensor in enumerate(r.typed(r.typed(graph, dict, f"graphs[{name!r}]").get(side), list, side)):
                where = f"graphs[{name!r}].{side}[{i}]"
                shape = r.typed(r.typed(tensor, dict, where).get("shape"), list, f"{where}.shape")
                if not shape or shape[0] != 1:
                    raise r.fail(f"{where}.shape", f"a version {data['format_version']} graph has batch 1 first, got {shape}")
                tensor["shape"] = shape[1:]
    dispatch = r.typed(data.get("dispatch"), dict, "dispatch")
    rule = RULES.get(dispatch.get("rule"))
    if rule is not None and rule.upgrade is not None:
        rule.upgrade(r, dispatch)
    return data


def _parse(data: Any, source: Path) -> Manifest:
    r = FieldReader(source)
    version = r.typed(r.typed(data, dict, "manifest").get("format_version"), int, "format_version")
    if version not in READABLE_VERSIONS:
        raise r.fail("format_version", f"unknown format_version {version}; this runtime reads {list(READABLE_VERSIONS)}")
    if version < 3:
        data = _upgrade(data, r)
    top = r.fields(
        data, "manifest",
        {"format_version", "family", "target", "classes", "max_batch", "preprocessing", "graphs", "dispatch",
         "artifacts", "producer", "macs_convention"},
        frozenset({"build", "accuracy", "quantization"}) if version >= 6 else frozenset({"build"}),
    )

    classes = r.typed(top["classes"], list, "classes")
    if not classes:
        raise r.fail("classes", "must list at least one class")
    classes = tuple(r.text(c, f"classes[{i}]") for i, c in enumerate(classes))

    pre = r.fields(top["preprocessing"], "preprocessing", {"resolution", "mean", "std", "resize"},
                   frozenset({"crop"}) if version >= 5 else frozenset())
    preprocessing = Preprocessing(
        resolution=r.count(pre["resolution"], "preprocessing.resolution", 1),
        mean=r.floats(pre["mean"], "preprocessing.mean", 3),
        std=r.floats(pre["std"], "preprocessing.std", 3),
        resize=r.choice(pre["resize"], tuple(k for k, since in RESIZES.items() if since <= version), "preprocessing.resize"),
        crop=r.number(pre["crop"], "preprocessing.crop") if "crop" in pre else None,
    )
    if any(s <= 0 for s in preprocessing.std):
        raise r.fail("preprocessing.std", f"must be positive, got {list(preprocessing.std)}")
    if preprocessing.crop is not None and not 0 < preprocessing.crop <= 1:
        raise r.fail("preprocessing.crop", f"must be in (0, 1], got {preprocessing.crop}")

    artifacts = {}
    for file, entry in r.typed(top["artifacts"], dict, "artifacts").items():
        where = f"artifacts[{file!r}]"
        if Path(file).name != file or file in ("", ".", "..", MANIFEST_FILE):
            raise r.fail(where, "must be a plain file name inside the bundle")
        entry = r.fields(entry, where, {"sha256", "bytes"})
        digest = r.typed(entry["sha256"], str, f"{where}.sha256")
        if not _SHA256.fullmatch(digest):
            raise r.fail(f"{where}.sha256", f"not a lowercase hex sha256: {digest!r}")
        artifacts[file] = Artifact(digest, r.count(entry["bytes"], f"{where}.bytes"))

    graph_items = r.typed(top["graphs"], dict, "graphs")
    if not graph_items:
        raise r.fail("graphs", "must hold at least one graph")
    for name, entry in graph_items.items():
        where = f"graphs[{name!r}]"
        entry = r.fields(entry, where, {"name", "artifact", "entry", "inputs", "outputs", "macs"},
                         frozenset({"precision"}) if version >= 6 else frozenset())
        if entry["name"] != name:
            raise r.fail(f"{where}.name", f"{entry['name']!r} differs from its key")
        method, artifact = entry["entry"], r.text(entry["artifact"], f"{where}.artifact")
        if artifact not in artifacts:
            raise r.fail(f"{where}.artifact", f"{artifact!r} is not listed in artifacts")
        r.graphs[name] = Graph(
            name=name,
            artifact=artifact,
            entry=None if method is None else r.text(method, f"{where}.entry"),
            inputs=r.tensors(entry["inputs"], f"{where}.inputs"),
            outputs=r.tensors(entry["outputs"], f"{where}.outputs"),
            macs=r.count(entry["macs"], f"{where}.macs"),
            precision=r.choice(entry.get("precision", "fp32"), PRECISIONS, f"{where}.precision"),
        )

    d = r.typed(top["dispatch"], dict, "dispatch")
    rule = RULES[r.choice(d.get("rule"), RULES, "dispatch.rule")]
    if version < rule.since:
        raise r.fail("dispatch.rule", f"{rule.name!r} exists from format_version {rule.since}, not {version}")
    dispatch = rule.parse(r, d, r.graphs, len(classes))
    image = (len(preprocessing.mean), preprocessing.resolution, preprocessing.resolution)
    for name, graph in r.graphs.items():
        first = graph.inputs[0]
        if first.name == "image" and first.shape != image:
            raise r.fail(f"graphs[{name!r}].inputs[0].shape", f"{list(first.shape)} differs from the preprocessed image {list(image)}")

    producer = r.typed(top["producer"], dict, "producer")
    build = top.get("build")
    return Manifest(
        format_version=version,
        family=r.text(top["family"], "family"),
        target=r.choice(top["target"], TARGETS, "target"),
        classes=classes,
        max_batch=r.count(top["max_batch"], "max_batch", 1),
        preprocessing=preprocessing,
        graphs=r.graphs,
        dispatch=dispatch,
        artifacts=artifacts,
        producer={str(k): str(v) for k, v in producer.items()},
        macs_convention=r.text(top["macs_convention"], "macs_convention"),
        build=None if build is None else _parse_build(r, build, artifacts),
        accuracy=_parse_accuracy(r, top["accuracy"]) if "accuracy" in top else None,
        quantization=_parse_quantization(r, top["quantization"], top["target"]) if "quantization" in top else None,
    )


def _share(r: FieldReader, value: Any, where: str) -> float:
    share = r.number(value, where)
    if not 0 <= share <= 1:
        raise r.fail(where, f"must be in [0, 1], got {share}")
    return share


def _parse_accuracy(r: FieldReader, data: Any) -> Accuracy:
    data = r.fields(data, "accuracy", {"source", "images", "points"})
    points = []
    for i, entry in enumerate(r.typed(data["points"], list, "accuracy.points")):
        where = f"accuracy.points[{i}]"
        entry = r.fields(entry, where, {"name", "kind", "value", "top1"})
        kind = r.choice(entry["kind"], ("path", "scale"), f"{where}.kind")
        value = entry["value"]
        if kind == "scale":
            value = _share(r, value, f"{where}.value")
        elif value is not None:
            raise r.fail(f"{where}.value", f"a path point has no value, got {value!r}")
        points.append(PointAccuracy(r.text(entry["name"], f"{where}.name"), kind, value,
                                    _share(r, entry["top1"], f"{where}.top1")))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise r.fail("accuracy.points", f"point names repeat: {names}")
    return Accuracy(r.text(data["source"], "accuracy.source"), r.count(data["images"], "accuracy.images", 1),
                    tuple(points))


def _parse_quantization(r: FieldReader, data: Any, target: str) -> Quantization:
    data = r.fields(data, "quantization", {"precision", "calibration", "selector", "check"})
    precision = r.choice(data["precision"], PRECISIONS[1:], "quantization.precision")
    calibration = None
    if data["calibration"] is not None:
        c = r.fields(data["calibration"], "quantization.calibration", {"source", "images", "sha256", "routed", "forced"})
        digest = r.typed(c["sha256"], str, "quantization.calibration.sha256")
        if not _SHA256.fullmatch(digest):
            raise r.fail("quantization.calibration.sha256", f"not a lowercase hex sha256: {digest!r}")
        counts = {}
        for side in ("routed", "forced"):
            where = f"quantization.calibration.{side}"
            counts[side] = {r.graph(g, f"{where}[{g!r}]"): r.count(n, f"{where}[{g!r}]")
                            for g, n in r.typed(c[side], dict, where).items()}
        calibration = Int8Calibration(r.text(c["source"], "quantization.calibration.source"),
                                  r.count(c["images"], "quantization.calibration.images", 1), digest, **counts)
    if precision == "int8" and calibration is None and TARGETS[target].calibrates_int8:
        raise r.fail("quantization.calibration", f"int8 graphs on {target} need their calibration recorded")
    selector = None
    if data["selector"] is not None:
        s = r.fields(data["selector"], "quantization.selector", {"precision", "agreement", "threshold"})
        selector = SelectorPrecision(r.choice(s["precision"], PRECISIONS, "quantization.selector.precision"),
                                     _share(r, s["agreement"], "quantization.selector.agreement"),
                                     _share(r, s["threshold"], "quantization.selector.threshold"))
    check = None
    if data["check"] is not None:
        where = "quantization.check"
        c = r.fields(data["check"], where, {"images", "path_agreement", "top1_agreement", "top1_fp32", "top1",
                                            "max_abs_diff", "tolerance"})
        optional = {k: None if c[k] is None else _share(r, c[k], f"{where}.{k}") for k in ("top1_fp32", "top1")}
        check = QuantizedCheck(r.count(c["images"], f"{where}.images", 1),
                               _share(r, c["path_agreement"], f"{where}.path_agreement"),
                               _share(r, c["top1_agreement"], f"{where}.top1_agreement"), **optional,
                               max_abs_diff=r.number(c["max_abs_diff"], f"{where}.max_abs_diff"),
                               tolerance=r.number(c["tolerance"], f"{where}.tolerance"))
    return Quantization(precision, calibration, selector, check)


def _parse_build(r: FieldReader, data: Any, artifacts: dict[str, Artifact]) -> BuildPlan:
    data = r.fields(data, "build", {"precision"}, frozenset({"workspace_mb", "compute_units", "calibration", "profiles"}))
    precision = r.choice(data["precision"], PRECISIONS, "build.precision")
    workspace = data.get("workspace_mb")
    if workspace is not None:
        r.count(workspace, "build.workspace_mb", 1)
    units = data.get("compute_units")
    if units is not None:
        r.choice(units, COMPUTE_UNITS, "build.compute_units")
    calibration = data.get("calibration")
    if calibration is not None:
        r.choice(calibration, artifacts, "build.calibration")
    int8_graphs = any(graph.precision == "int8" for graph in r.graphs.values())
    if precision == "int8" and calibration is None and data.get("profiles") is not None and not int8_graphs:
        raise r.fail("build.calibration", "int8 engines need a calibration artifact or at least one int8 graph")
    profiles = None
    if data.get("profiles") is not None:
        profiles = {}
        for name, entries in r.typed(data["profiles"], dict, "build.profiles").items():
            where = f"build.profiles[{name!r}]"
            inputs = {spec.name: spec for spec in r.graphs[r.graph(name, where)].inputs}
            parsed = []
            for i, entry in enumerate(r.typed(entries, list, where)):
                at = f"{where}[{i}]"
                entry = r.fields(entry, at, {"input", "min", "opt", "max"})
                spec = inputs[r.choice(entry["input"], inputs, f"{at}.input")]
                shapes = []
                for key in ("min", "opt", "max"):
                    dims = r.typed(entry[key], list, f"{at}.{key}")
                    if len(dims) != 1 + len(spec.shape):
                        raise r.fail(f"{at}.{key}", f"rank {len(dims)} is not the input's per-sample rank {len(spec.shape)} plus the batch")
                    shapes.append(tuple(r.count(d, f"{at}.{key}", 1) for d in dims))
                if not all(a <= b <= c for a, b, c in zip(*shapes)):
                    raise r.fail(at, f"needs min <= opt <= max per dimension, got {shapes}")
                parsed.append(EngineProfile(entry["input"], *shapes))
            profiles[name] = tuple(parsed)
    return BuildPlan(precision, workspace, units, calibration, profiles)


def read_manifest(bundle: str | Path) -> Manifest:
    """Parse and validate `bundle/manifest.json`; artifacts are checked by `runtime.format.bundle`."""
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
