"""Golden vectors: the Python runtime's decisions, recorded for the Android core to replay.

    python android_demo/golden/make_golden.py            # a few minutes on 2 cores

For one small ExecuTorch bundle of each family it trains a digits model,
exports it, and runs the Python runtime (`Session.run`) on uint8 images
while recording every graph call. It writes, per family:

- `<family>.manifest.json`: the bundle's manifest;
- `<family>.json`: per case the image set (`images.json`), the request, the preprocessed batch,
  every graph call (graph, inputs, outputs) in order, and the decisions
  (paths, MACs, logits), or the error the request raised;

`preprocessing.json`: preprocessed tensors under each resize, for images of awkward sizes and a 1080p frame;
`report_schema.json`: every field of a `runtime.profile` report and its JSON
types, which the phone's benchmark report must match; and `damaged.json`: damaged manifests and bundles with the messages the
Python reader refuses them with, and (`accepted`) edited manifests it reads, with what it read of their version 6 fields.
The JVM tests (android_demo/core) replay it all through the Kotlin core; tests/test_golden.py replays it through the
Python runtime, so the committed files cannot drift from either.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.backends import create_backend  # noqa: E402
from runtime.format.bundle import open_bundle  # noqa: E402
from runtime.profile.table import recording  # noqa: E402
from runtime.serving.costs import BudgetError  # noqa: E402
from trainer.families import FAMILIES  # noqa: E402
from runtime.format.fields import BundleError  # noqa: E402
from runtime.format.manifest import MANIFEST_FILE, read_manifest  # noqa: E402
from runtime.session import Session  # noqa: E402

DEVICE = "pixel-8"  # the device the budget cases' latencies are keyed on
MAX_BATCH = 4  # below the largest case's batch, so that the session's chunking is replayed too
MANIFEST_PLACEHOLDER = "<manifest>"
BUNDLE_PLACEHOLDER = "<bundle>"


FULL_ROW = 64  # a tensor with rows of at most this many values is stored whole (scores, gates, logits, S)


def fingerprint_weights(size: int) -> np.ndarray:
    """Fixed weights a row is summed with into its fingerprint; the Kotlin tests compute the same."""
    i = np.arange(size, dtype=np.int64)
    return ((i * 37 + 11) % 101) / 101.0 - 0.5


def fingerprints(array: np.ndarray) -> np.ndarray:
    """One number per sample: its values summed with fixed weights."""
    rows = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
    return rows @ fingerprint_weights(rows.shape[1])


def encode(array: np.ndarray) -> dict:
    """A tensor in the golden files: whole (base64 float32) if its rows are small, else one fingerprint per row.

    Feature maps are kept out: the Kotlin core only moves their rows between
    graph calls, so a fingerprint per row proves it moved the right ones, at
    a thousandth of the size.
    """
    array = np.ascontiguousarray(array, dtype="<f4")
    rows = array.reshape(len(array), -1)
    if rows.shape[1] <= FULL_ROW:
        return {"shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode("ascii")}
    return {"shape": list(array.shape), "fingerprints": fingerprints(array).tolist()}


def digits_images() -> np.ndarray:
    from trainer.data import digits_canvas

    return digits_canvas("test")[0]


def image_sets(images: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 NHWC batches at the bundle's size, smaller, and larger and not square, so that resizing is replayed."""
    upsampled = np.repeat(np.repeat(images[:4, :20, :24], 2, axis=1), 2, axis=2)  # 40 x 48
    return {"native": images[:6], "small": images[6:9, ::2, ::2], "wide": upsampled, "one": images[9:10]}


def run_case(session: Session, name: str, image_set: str, images: np.ndarray, **request) -> dict:
    from runtime.preprocess import prepare

    case = {
        "name": name,
        "images": image_set,
        "request": {k: v for k, v in request.items() if v is not None},
        "preprocessed": encode(prepare(images, session.manifest.preprocessing)),
    }
    with recording(session) as calls:
        try:
            result = session.run(images, **request)
        except (ValueError, BudgetError) as error:
            case["error"] = str(error)
        else:
            case["result"] = {"paths": result.paths, "macs": result.macs.tolist(), "logits": encode(result.logits)}
    case["calls"] = [{"graph": name, "inputs": [encode(x) for x in inputs], "outputs": [encode(y) for y in outputs]}
                     for name, inputs, outputs in calls]
    return case


def train_and_export(family: str, work: Path) -> Path:
    """The family's digits recipe, briefly trained, exported for ExecuTorch with its split's defaults (the block
    plan calibrated on CALIBRATION training images)."""
    import exporter
    from trainer.recipes import get_recipe
    from trainer.train import train

    checkpoint = work / f"{family}-checkpoint"
    train(get_recipe(f"{family}-digits").with_epochs(EPOCHS), checkpoint, subset=SUBSET)
    bundle = work / f"{family}-executorch"
    exporter.export(checkpoint, "executorch", bundle, max_batch=MAX_BATCH, samples=16, calibration=_calibration())
    return bundle


EPOCHS, SUBSET = 3, 384  # brief: the vectors record decisions, which need mixed paths, not accuracy


def with_latencies(bundle: Path) -> None:
    """Give a bundle that carries its own costs latencies on DEVICE, as a merged profile would, so that budget_ms
    cases run."""
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    dispatch = manifest["dispatch"]
    for i, entry in enumerate(dispatch["paths"]):
        graph = manifest["graphs"][entry["graph"]]
        entry["latency_ms"] = {f"{DEVICE}/executorch": round(0.5 + graph["macs"] / 2e6 + 0.01 * i, 3)}
    dispatch["selector_latency_ms"] = {f"{DEVICE}/executorch": 0.125}
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def without_selector(bundle: Path, out: Path) -> Path:
    """The same bundle answered by table picks (Resizable-NAS's dispatch), with the selector's graph unused."""
    shutil.copytree(bundle, out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["dispatch"].update(selector=None, selector_latency_ms={})
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def cases(session: Session, images: dict[str, np.ndarray]) -> list[dict]:
    """The requests every bundle answers, then those its rule adds, chosen through the rule's interface alone."""
    manifest = session.manifest
    rule, dispatch = manifest.rule, manifest.dispatch
    run = lambda name, batch, **request: run_case(session, name, batch, images[batch], **request)  # noqa: E731
    points = dispatch.operating_points(manifest.graphs)
    out = [
        run("native", "native"),
        run("resized up", "small"),
        run("resized down, not square", "wide"),
        run("static full model", "native", static=True),
        run("unknown path", "one", path="no-such-path"),
    ]
    walk = dispatch.block_walk()
    if rule.takes_scale:
        blocks = len(walk.starts)
        out.append(run("scale per image", "native", scale=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
        out.append(run("one scale", "wide", scale=0.5))
        out.append(run("forced path", "small", path="10" * (blocks // 2) + "1" * (blocks % 2), scale=0.3))
        out.append(run("scale out of range", "one", scale=1.5))
    else:
        out.append(run(f"forced path {points[-1].name}", "native", path=points[-1].name))
        out.append(run("scale on a bundle without one", "one", scale=0.5))
    if walk is not None and not rule.takes_scale:
        out += walked_cases(run, dispatch, walk, [p.name for p in points])
    out += budget_cases(run, session, points)
    return out


def walked_cases(run, dispatch, walk, cached: list[str]) -> list[dict]:
    """A block rule with paths compiled whole: a cached path, the full one, one walked block by block, and one
    through a block the plan left out."""
    roles = dispatch.graph_roles()
    runnable = "".join("1" if any(roles[g] == "block" for g in starts) else "0" for starts in walk.starts)
    walked = next(p for p in (runnable, runnable[:-1] + "0", "1" + "0" * (len(runnable) - 1)) if p not in cached)
    out = [
        run("forced cached path", "native", path=cached[0]),
        run("forced full path", "small", path=dispatch.full_path()),
        run("forced walked path", "native", path=walked),
    ]
    if "0" in runnable:
        through = "".join("1" if k == runnable.index("0") else c for k, c in enumerate(walked))
        out.append(run("forced path through a left-out block", "one", path=through))
    out.append(run("one image", "one"))
    return out


def budget_cases(run, session: Session, points) -> list[dict]:
    """Budgets in MACs and milliseconds: what they admit, their refusals below the cheapest point, beside a path or
    the static model, or without the costs they need (this session has no latency table)."""
    manifest = session.manifest
    key = f"{DEVICE}/executorch"
    macs = sorted(p.macs for p in points if p.macs is not None)
    if not macs:  # a scale's MACs depend on the image: a budget needs the latency table's
        return [run("budget in MACs without a latency table", "one", budget_macs=1e9)]
    out = [run("budget in MACs", "native", budget_macs=float(macs[len(macs) // 2])),
           run("budget below the cheapest", "one", budget_macs=float(macs[0] - 1)),
           run("budget with the static model", "one", static=True, budget_macs=float(macs[-1])),
           run("budget with a path", "one", path=points[0].name, budget_macs=float(macs[-1]))]
    if not manifest.rule.takes_budget:
        return out + [run("budget in ms without a latency table", "wide", budget_ms=5.0)]
    dispatch = manifest.dispatch
    latencies = sorted(p.latency_ms[key] for p in dispatch.paths)
    overhead = dispatch.selector_latency_ms.get(key, 0.0)
    return out + [
        run("budget in ms", "wide", budget_ms=latencies[len(latencies) // 2] + overhead),
        run("budget in MACs and ms", "small", budget_macs=float(macs[-2]), budget_ms=latencies[1] + overhead),
        run("latency budget below the cheapest", "one", budget_ms=latencies[0] / 2),
    ]


LARGE_FRAME = (1080, 1920)  # a camera's frame, to ImageNet's 224 px input


def pattern_frame(height: int, width: int) -> np.ndarray:
    """A uint8 frame computed, not stored: (7x + 13y + 85c + (xy >> 6)) mod 256; the Kotlin tests compute the same."""
    y, x, c = np.ogrid[:height, :width, :3]
    return ((7 * x + 13 * y + 85 * c + ((x * y) >> 6)) % 256).astype(np.uint8)[None]


def preprocessing_golden(manifest: dict) -> dict:
    """Preprocessed tensors under each `resize`: the crop, resize and normalization, value for value.

    Images of awkward sizes at the bundle's resolution and statistics, with and
    without ImageNet's 0.875 central crop, stored whole; and a 1080p frame to
    224 px, one fingerprint per image row. "bilinear" cases are the runtime's
    `prepare`; "pil-bilinear" ones are the definition itself, torchvision's
    evaluation transform on PIL images (the runtime may put a value one level
    in 255 away, tests/test_runtime_preprocess.py).
    """
    from benchmarks.preprocessing import training_preprocessed
    from runtime.format.manifest import RESIZES, Preprocessing
    from runtime.preprocess import prepare
    from trainer.data import IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_RESOLUTION, IMAGENET_STD

    def preprocessed(images: np.ndarray, settings: dict) -> np.ndarray:
        pre = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
        out = prepare(images, pre) if pre.resize == "bilinear" else training_preprocessed(images, pre)
        return np.ascontiguousarray(out, dtype="<f4")

    statistics = {k: manifest["preprocessing"][k] for k in ("resolution", "mean", "std")}
    side = statistics["resolution"]
    rng = np.random.default_rng(0)
    cases = []
    for resize in RESIZES:
        for crop in (None, 0.875):
            settings = {**statistics, "resize": resize, **({} if crop is None else {"crop": crop})}
            for height, width in ((side, side), (5, 7), (side + 1, side - 1), (48, 64)):
                images = rng.integers(0, 256, size=(1, height, width, 3), dtype=np.uint8)
                out = preprocessed(images, settings)
                cases.append({
                    "preprocessing": settings,
                    "images": {"shape": list(images.shape), "base64": base64.b64encode(images.tobytes()).decode("ascii")},
                    "preprocessed": {"shape": list(out.shape), "base64": base64.b64encode(out.tobytes()).decode("ascii")},
                })
    imagenet = {"resolution": IMAGENET_RESOLUTION, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "resize": "pil-bilinear", "crop": IMAGENET_RESOLUTION / IMAGENET_RESIZE}
    out = preprocessed(pattern_frame(*LARGE_FRAME), imagenet)
    frame = {"preprocessing": imagenet, "pattern": [1, *LARGE_FRAME, 3],
             "preprocessed": {"shape": list(out.shape), "row_fingerprints": fingerprints(out.reshape(-1, out.shape[-1])).tolist()}}
    return {"preprocessing": manifest["preprocessing"], "cases": cases, "frames": [frame]}


def family_goldens(out: Path, work: Path) -> dict[str, Path]:
    images = image_sets(digits_images())
    (out / "images.json").write_text(json.dumps({
        name: {"shape": list(batch.shape), "base64": base64.b64encode(batch.tobytes()).decode("ascii")}
        for name, batch in images.items()
    }, indent=1) + "\n")
    bundles = {family: train_and_export(family, work) for family in FAMILIES}
    for family, bundle in list(bundles.items()):
        if open_bundle(bundle).rule.takes_budget:
            with_latencies(bundle)
            bundles[f"{family}-table"] = without_selector(bundle, work / f"{family}-table")
    backend = create_backend("executorch", "executorch", threads=1)
    for family, bundle in bundles.items():
        manifest = open_bundle(bundle)
        session = Session(bundle, manifest, backend, device=DEVICE)
        golden = {
            "family": family,
            "manifest": f"{family}.manifest.json",
            "device": DEVICE,
            "backend": "executorch",
            "cases": cases(session, images),
        }
        shutil.copyfile(bundle / MANIFEST_FILE, out / golden["manifest"])
        (out / f"{family}.json").write_text(json.dumps(golden, indent=1) + "\n")
        print(f"{family}: {len(golden['cases'])} cases")
    return bundles


def _calibration():
    import torch

    from trainer.data import load_split

    dataset, _ = load_split("digits", "train")
    return torch.stack([dataset[i][0] for i in range(256)])


# Damaged manifests: (name, family, edits), each edit a path into the manifest and a new value, or DELETE;
# "@batch1" prefixes every tensor shape with a batch of 1, as versions 1 and 2 wrote them.
DELETE = "<delete>"


def as_version(version: int) -> list[tuple[list, object]]:
    """The edits that make a golden manifest an older exporter's: the version, without the fields added since.

    Every golden bundle carries `accuracy` (version 6): digits is on this machine when the exporter measures it."""
    return [(["format_version"], version), *([(["accuracy"], DELETE)] if version < 6 else [])]


MANIFEST_DAMAGE = [
    ("not an object", "drnet", [([], [1, 2])]),
    ("unknown format_version", "drnet", [(["format_version"], 99)]),
    ("format_version a string", "drnet", [(["format_version"], "4")]),
    ("missing graphs", "drnet", [(["graphs"], DELETE)]),
    ("unknown top-level field", "drnet", [(["extra"], True)]),
    ("no classes", "drnet", [(["classes"], [])]),
    ("class not a string", "drnet", [(["classes", 0], 7)]),
    ("empty class name", "drnet", [(["classes", 1], "")]),
    ("unknown target", "drnet", [(["target"], "tflite")]),
    ("max_batch 0", "drnet", [(["max_batch"], 0)]),
    ("resolution a float", "drnet", [(["preprocessing", "resolution"], 32.0)]),
    ("two means", "drnet", [(["preprocessing", "mean"], [0.5, 0.5])]),
    ("mean a string", "drnet", [(["preprocessing", "mean", 1], "0.5")]),
    ("std zero", "drnet", [(["preprocessing", "std", 1], 0)]),
    ("unknown resize", "drnet", [(["preprocessing", "resize"], "nearest")]),
    ("crop above 1", "drnet", [(["preprocessing", "crop"], 1.5)]),
    ("crop zero", "drnet", [(["preprocessing", "crop"], 0)]),
    ("crop a string", "drnet", [(["preprocessing", "crop"], "0.875")]),
    ("crop in a version 4 manifest", "drnet", [*as_version(4), (["preprocessing", "crop"], 0.875)]),
    ("artifact outside the bundle", "drnet", [(["artifacts", "../program.pte"], {"sha256": "0" * 64, "bytes": 1})]),
    ("artifact sha256 uppercase", "drnet", [(["artifacts", "@artifact", "sha256"], "AB" * 32)]),
    ("artifact bytes negative", "drnet", [(["artifacts", "@artifact", "bytes"], -1)]),
    ("artifact bytes a bool", "drnet", [(["artifacts", "@artifact", "bytes"], True)]),
    ("graph name differs from key", "drnet", [(["graphs", "@graph", "name"], "other")]),
    ("graph artifact unlisted", "drnet", [(["graphs", "@graph", "artifact"], "missing.pte")]),
    ("graph entry empty", "drnet", [(["graphs", "@graph", "entry"], "")]),
    ("graph without inputs", "drnet", [(["graphs", "@graph", "inputs"], [])]),
    ("tensor dim 0", "drnet", [(["graphs", "@graph", "inputs", 0, "shape", 1], 0)]),
    ("tensor dtype float16", "drnet", [(["graphs", "@graph", "outputs", 0, "dtype"], "float16")]),
    ("tensor unknown field", "drnet", [(["graphs", "@graph", "outputs", 0, "layout"], "nchw")]),
    ("macs a float", "drnet", [(["graphs", "@graph", "macs"], 1.5)]),
    ("image of the wrong size", "drnet", [(["graphs", "@graph", "inputs", 0, "shape"], [3, 16, 16])]),
    ("unknown rule", "drnet", [(["dispatch", "rule"], "bogus")]),
    ("rule a list", "drnet", [(["dispatch", "rule"], ["argmax"])]),
    ("selector unknown", "drnet", [(["dispatch", "selector"], "nope")]),
    ("no paths", "drnet", [(["dispatch", "paths"], [])]),
    ("path names repeat", "drnet", [(["dispatch", "paths", 1, "name"], "@path0")]),
    ("path resolution 0", "drnet", [(["dispatch", "paths", 0, "resolution"], 0)]),
    ("reference not a path", "drnet", [(["dispatch", "reference"], "@selector")]),
    ("version 2 without the batch dimension", "drnet", as_version(2)),
    ("version 2 reference_path unknown", "drnet", [
        *as_version(2), (["dispatch", "reference"], DELETE), (["dispatch", "reference_path"], "nope"), ("@batch1", None),
    ]),
    ("budget rule in version 3", "resizable", as_version(3)),
    ("accuracy above 1", "resizable", [(["dispatch", "paths", 0, "accuracy"], 1.5)]),
    ("latency negative", "resizable", [(["dispatch", "paths", 0, "latency_ms", "pixel-8/executorch"], -0.25)]),
    ("selector latency key empty", "resizable", [(["dispatch", "selector_latency_ms", ""], 1.0)]),
    ("selector scores the wrong number of paths", "resizable", [(["dispatch", "paths"], "@paths[:-1]")]),
    ("policy segment too short", "blockdrop", [(["dispatch", "segments"], [{"graph": "@stem", "first": 2, "last": 2}])]),
    ("cached path too short", "blockdrop", [(["dispatch", "cached_paths", 0, "path"], "101")]),
    ("calibration usage too short", "blockdrop", [(["dispatch", "calibration", "usage"], [0.5])]),
    ("no blocks", "blockdrop", [(["dispatch", "blocks"], [])]),
    ("block unknown field", "blockdrop", [(["dispatch", "blocks", 0, "fused"], None)]),
    ("gated block without skip", "urnet", [(["dispatch", "blocks", 0, "skip"], None)]),
    ("gated reference unknown", "urnet", [(["dispatch", "reference"], "nope")]),
    ("gated extra field", "urnet", [(["dispatch", "selector"], None)]),
    # version 6: accuracy, graph precision, quantization (tests/test_runtime_errors.py's version 6 tests, and more)
    ("accuracy in a version 5 manifest", "drnet", [(["format_version"], 5)]),
    ("graph precision in a version 5 manifest", "drnet", [*as_version(5), (["graphs", "@graph", "precision"], "int8")]),
    ("quantization in a version 5 manifest", "drnet", [*as_version(5), (["quantization"], "@int8-quantization")]),
    ("point top1 above 1", "drnet", [(["accuracy", "points", 0, "top1"], 1.5)]),
    ("path point with a value", "drnet", [(["accuracy", "points", 0, "value"], 0.5)]),
    ("point names repeat", "drnet", [(["accuracy", "points"], "@points+points[0]")]),
    ("graph precision int4", "drnet", [(["graphs", "@graph", "precision"], "int4")]),
    ("int8 quantization without calibration", "drnet", [
        (["quantization"], {"precision": "int8", "calibration": None, "selector": None, "check": None}),
    ]),
    ("int8 build plan without calibration or an int8 graph", "drnet", [
        (["target"], "tensorrt"), (["build"], "@int8-build"),
    ]),
    ("accuracy not an object", "drnet", [(["accuracy"], [])]),
    ("accuracy null", "drnet", [(["accuracy"], None)]),
    ("graph precision null", "drnet", [(["graphs", "@graph", "precision"], None)]),
    ("quantization null", "drnet", [(["quantization"], None)]),
    ("accuracy source empty", "drnet", [(["accuracy", "source"], "")]),
    ("accuracy images 0", "drnet", [(["accuracy", "images"], 0)]),
    ("accuracy points not a list", "drnet", [(["accuracy", "points"], {})]),
    ("point kind unknown", "drnet", [(["accuracy", "points", 0, "kind"], "budget")]),
    ("point name empty", "drnet", [(["accuracy", "points", 0, "name"], "")]),
    ("point top1 a bool", "drnet", [(["accuracy", "points", 0, "top1"], True)]),
    ("point top1 negative", "drnet", [(["accuracy", "points", 0, "top1"], -1)]),
    ("point unknown field", "drnet", [(["accuracy", "points", 0, "top5"], 0.99)]),
    ("scale point value above 1", "urnet", [(["accuracy", "points", 0, "value"], 1.5)]),
    ("scale point without a value", "urnet", [(["accuracy", "points", 0, "value"], None)]),
    ("quantization not an object", "drnet", [(["quantization"], [])]),
    ("quantization missing check", "drnet", [(["quantization"], "@int8-quantization"), (["quantization", "check"], DELETE)]),
    ("quantization precision fp32", "drnet", [(["quantization"], "@int8-quantization"), (["quantization", "precision"], "fp32")]),
    ("calibration sha256 uppercase", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "calibration", "sha256"], "AB" * 32),
    ]),
    ("calibration sha256 a number", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "calibration", "sha256"], 7),
    ]),
    ("calibration routed to an unknown graph", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "calibration", "routed", "nope"], 3),
    ]),
    ("calibration forced count negative", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "calibration", "forced", "@graph"], -1),
    ]),
    ("calibration forced not an object", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "calibration", "forced"], []),
    ]),
    ("calibration images 0", "drnet", [(["quantization"], "@int8-quantization"), (["quantization", "calibration", "images"], 0)]),
    ("selector precision unknown", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "selector", "precision"], "int4"),
    ]),
    ("selector agreement above 1", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "selector", "agreement"], 1.25),
    ]),
    ("check top1 above 1", "drnet", [(["quantization"], "@int8-quantization"), (["quantization", "check", "top1"], 1.01)]),
    ("check images 0 and top1_fp32 above 1", "drnet", [  # Python reads top1_fp32 and top1 before the rest
        (["quantization"], "@int8-quantization"), (["quantization", "check", "images"], 0),
        (["quantization", "check", "top1_fp32"], 2),
    ]),
    ("check max_abs_diff a string", "drnet", [
        (["quantization"], "@int8-quantization"), (["quantization", "check", "max_abs_diff"], "0.1"),
    ]),
    ("check unknown field", "drnet", [(["quantization"], "@int8-quantization"), (["quantization", "check", "mean_abs_diff"], 0.0)]),
]

# Manifests both readers accept, with what the Python reader parsed of the version 6 fields.
MANIFEST_ACCEPTED = [
    ("int8 with calibration, selector and check", "drnet", [
        (["quantization"], "@int8-quantization"), (["graphs", "@selector", "precision"], "int8"),
        (["graphs", "@path0graph", "precision"], "int8"),
    ]),
    ("fp16 without labels", "drnet", [
        (["quantization"], "@fp16-quantization"), (["graphs", "@graph", "precision"], "fp16"),
    ]),
    ("scale points", "urnet", []),
    ("version 5", "drnet", as_version(5)),
    ("coreml int8 without calibration", "drnet", [  # Core ML's int8 is 8-bit weights: nothing calibrated
        (["target"], "coreml"), (["graphs"], "@int8-graphs"),
        (["quantization"], {"precision": "int8", "calibration": None, "selector": None, "check": None}),
    ]),
    ("tensorrt int8 build plan without calibration, with an int8 graph", "drnet", [
        (["target"], "tensorrt"), (["build"], "@int8-build"), (["graphs", "@path0graph", "precision"], "int8"),
    ]),
]

TEXT_DAMAGE = [
    ("empty file", ""),
    ("truncated", '{"format_version": 4, "family": "drnet"'),
    ("trailing comma", '{"format_version": 4,}'),
    ("single quotes", "{'format_version': 4}"),
    ("extra data", '{"format_version": 4} {}'),
    ("unterminated string", '{"format_version": 4, "family": "drn'),
    ("missing colon", '{"format_version" 4}'),
    ("bad literal", '[1, tru]'),
]


def _resolve(manifest: dict, value):
    """Placeholders in a damage table: '@graph' the first graph's name, '@artifact' the first artifact, and so on."""
    if not isinstance(value, str) or not value.startswith("@"):
        return value
    dispatch = manifest["dispatch"]
    return {
        "@graph": lambda: next(iter(manifest["graphs"])),
        "@artifact": lambda: next(iter(manifest["artifacts"])),
        "@selector": lambda: dispatch.get("selector"),
        "@stem": lambda: dispatch.get("stem"),
        "@path0": lambda: (dispatch.get("paths") or [{}])[0].get("name"),
        "@path0graph": lambda: (dispatch.get("paths") or [{}])[0].get("graph"),
        "@paths[:-1]": lambda: (dispatch.get("paths") or [])[:-1],
        "@points+points[0]": lambda: [*manifest["accuracy"]["points"], manifest["accuracy"]["points"][0]],
        "@int8-quantization": lambda: int8_quantization(manifest),
        "@int8-graphs": lambda: {name: {**graph, "precision": "int8"} for name, graph in manifest["graphs"].items()},
        "@int8-build": lambda: int8_build(manifest),
        "@fp16-quantization": lambda: {
            "precision": "fp16", "calibration": None, "selector": None,
            "check": {"images": 200, "path_agreement": 1, "top1_agreement": 0.995, "top1_fp32": None, "top1": None,
                      "max_abs_diff": 0.0021, "tolerance": 0.01},
        },
    }[value]()


def int8_quantization(manifest: dict) -> dict:
    """A full int8 `quantization` record for an argmax (DRNet) manifest, as the exporter writes one."""
    dispatch = manifest["dispatch"]
    paths = [p["graph"] for p in dispatch["paths"]]
    routed = {dispatch["selector"]: 256, **{graph: 256 // 2 ** (i + 1) for i, graph in enumerate(paths)}}
    return {
        "precision": "int8",
        "calibration": {
            "source": "digits train, first 256 images", "images": 256, "sha256": _sha256(b"calibration images"),
            "routed": routed, "forced": {paths[-1]: 32},
        },
        "selector": {"precision": "int8", "agreement": 0.965, "threshold": 0.95},
        "check": {"images": 200, "path_agreement": 0.96, "top1_agreement": 0.985, "top1_fp32": 0.91, "top1": 0.905,
                  "max_abs_diff": 0.03125, "tolerance": 0.05},
    }


def int8_build(manifest: dict) -> dict:
    """An int8 TensorRT build plan for `manifest`'s graphs, as the exporter writes one: no calibration artifact,
    one profile per graph input from batch 1 to max_batch."""
    batch = manifest["max_batch"]
    return {
        "precision": "int8", "workspace_mb": 1024, "compute_units": None, "calibration": None,
        "profiles": {
            name: [{"input": x["name"], "min": [1, *x["shape"]], "opt": [batch, *x["shape"]], "max": [batch, *x["shape"]]}
                   for x in graph["inputs"]]
            for name, graph in manifest["graphs"].items()
        },
    }


def apply_edit(manifest, edit: dict):
    """The manifest after one edit: set (or delete) the value at a path of keys and indices ([] replaces it
    whole); or, with `batch1`, every tensor shape led by a batch of 1, as versions 1 and 2 wrote them."""
    if edit.get("batch1"):
        for graph in manifest["graphs"].values():
            for tensor in graph["inputs"] + graph["outputs"]:
                tensor["shape"] = [1, *tensor["shape"]]
        return manifest
    path = edit["path"]
    if not path:
        return copy.deepcopy(edit["value"])
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if edit.get("delete"):
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(edit["value"])
    return manifest


def _edited(manifest: dict, edits: list) -> tuple[dict, list[dict]]:
    """`manifest` after `edits`, and the edits with placeholders resolved, as the golden files record them."""
    data = copy.deepcopy(manifest)
    concrete = []
    for path, value in edits:
        if path == "@batch1":
            edit = {"batch1": True}
        else:
            path = [_resolve(data, key) for key in path]
            edit = {"path": path, "delete": True} if value == DELETE else {"path": path, "value": _resolve(data, value)}
        concrete.append(copy.deepcopy(edit))
        data = apply_edit(data, edit)
    return data, concrete


def damaged_manifests(manifests: dict[str, dict], work: Path) -> list[dict]:
    """Each damage as edits to its family's manifest, with placeholders resolved, and the Python reader's refusal."""
    out = []
    for name, family, edits in MANIFEST_DAMAGE:
        data, concrete = _edited(manifests[family], edits)
        out.append({"name": name, "family": family, "edits": concrete, "message": _refusal(json.dumps(data), work)})
    for name, text in TEXT_DAMAGE:
        out.append({"name": name, "text": text, "message": _refusal(text, work)})
    return out


def accepted_manifests(manifests: dict[str, dict], work: Path) -> list[dict]:
    """Each edited manifest the Python reader accepts, with the version 6 fields it parsed, for the Kotlin core to match."""
    out = []
    for name, family, edits in MANIFEST_ACCEPTED:
        data, concrete = _edited(manifests[family], edits)
        bundle = Path(tempfile.mkdtemp(dir=work))
        (bundle / MANIFEST_FILE).write_text(json.dumps(data))
        manifest = read_manifest(bundle)  # raises if the Python reader refuses it
        out.append({"name": name, "family": family, "edits": concrete, "parsed": parsed_fields(manifest)})
    return out


def parsed_fields(manifest) -> dict:
    """What an accepted case records of a parsed manifest, as JSON holds it: the version and the version 6 fields."""
    return json.loads(json.dumps({
        "format_version": manifest.format_version,
        "precision": {graph.name: graph.precision for graph in manifest.graphs.values()},
        "accuracy": None if manifest.accuracy is None else dataclasses.asdict(manifest.accuracy),
        "quantization": None if manifest.quantization is None else dataclasses.asdict(manifest.quantization),
    }))


def _refusal(text: str, work: Path) -> str:
    bundle = Path(tempfile.mkdtemp(dir=work))
    (bundle / MANIFEST_FILE).write_text(text)
    try:
        read_manifest(bundle)
    except BundleError as error:
        return str(error).replace(str(bundle / MANIFEST_FILE), MANIFEST_PLACEHOLDER)
    raise AssertionError(f"the Python reader accepted a damaged manifest: {text[:200]}")


def damaged_bundles(manifest: dict, work: Path) -> list[dict]:
    """Bundles whose files are damaged: one fake artifact, pinned by the manifest, then altered or removed."""
    program = b"stand-in for a program: only its sha256 is read\n"
    manifest = copy.deepcopy(manifest)
    manifest["artifacts"] = {"program.pte": {"sha256": _sha256(program), "bytes": len(program)}}
    for graph in manifest["graphs"].values():
        graph["artifact"] = "program.pte"
    text = json.dumps(manifest, indent=2)
    setups = [
        ("intact", {MANIFEST_FILE: text, "program.pte": program}),
        ("artifact altered", {MANIFEST_FILE: text, "program.pte": program[:-1] + b"!"}),
        ("artifact missing", {MANIFEST_FILE: text}),
        ("manifest missing", {"program.pte": program}),
    ]
    out = []
    for name, files in setups:
        bundle = Path(tempfile.mkdtemp(dir=work))
        for file, content in files.items():
            (bundle / file).write_bytes(content.encode() if isinstance(content, str) else content)
        try:
            open_bundle(bundle)
            message = None
        except BundleError as error:
            message = str(error).replace(str(bundle), BUNDLE_PLACEHOLDER)
        out.append({
            "name": name,
            "files": {file: base64.b64encode(c.encode() if isinstance(c, str) else c).decode("ascii") for file, c in files.items()},
            "message": message,
        })
    return out


MAP_FIELDS = ("graphs", "paths", "histogram")  # report fields keyed by graph, path or path name: "*" in the schema


def report_schema(report: dict) -> dict[str, list[str]]:
    """Every field path of a `runtime.profile` report with the JSON types it takes, for the phone's report to match."""
    fields: dict[str, set[str]] = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                name = "*" if path.rsplit(".", 1)[-1] in MAP_FIELDS else key
                walk(item, f"{path}.{name}" if path else name)
            return
        kind = {bool: "bool", int: "number", float: "number", str: "string", type(None): "null"}[type(value)]
        fields.setdefault(path, set()).add(kind)

    walk(report, "")
    return {path: sorted(kinds) for path, kinds in sorted(fields.items())}


def profile_schema(bundle: Path, images: np.ndarray) -> dict[str, list[str]]:
    """The schema of a real `python -m runtime.profile --out` report, with the dynamic mix, on a golden bundle."""
    import dataclasses

    import runtime
    from runtime.format.devices import get_device
    from runtime.profile.report import report_of
    from runtime.profile.table import measure_table

    device = dataclasses.replace(get_device(DEVICE), threads=1)
    session = runtime.load(bundle, threads=1, device=None)
    table = measure_table(session, device, runs=3, warmup=1, images=images)
    return report_schema(report_of(table, session.manifest, device, command="python -m runtime.profile ...").to_json())


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        bundles = family_goldens(args.out, work)
        manifests = {family: json.loads((bundle / MANIFEST_FILE).read_text()) for family, bundle in bundles.items()}
        damaged = {
            "manifests": damaged_manifests(manifests, work),
            "accepted": accepted_manifests(manifests, work),
            "bundles": damaged_bundles(manifests["drnet"], work),
            "placeholders": {"manifest": MANIFEST_PLACEHOLDER, "bundle": BUNDLE_PLACEHOLDER},
        }
        schema = profile_schema(bundles["drnet"], image_sets(digits_images())["native"])
        (args.out / "report_schema.json").write_text(json.dumps(schema, indent=1) + "\n")
        (args.out / "damaged.json").write_text(json.dumps(damaged, indent=1) + "\n")
        (args.out / "preprocessing.json").write_text(json.dumps(preprocessing_golden(manifests["drnet"]), indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.suffix == ".json")
    print(f"golden vectors in {args.out}: {total / 1e3:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
