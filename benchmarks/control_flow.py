"""URNet with one conditional graph per image against a graph call per block, and the static model.

    python -m benchmarks.control_flow [--rounds 15] [--images 16] [--work DIR]

Two models, each exported once for onnxruntime with `--control-flow graph`:
the trained CIFAR-10 URNet (PUBLISHED/blocks_cifar10/urnet-paper-gates-100,
ResNet-20), and a ResNet-110 URNet with random weights whose gates are rigged
at S = 0.5 (benchmarks/rigs.py: build_urnet). The per-block view is the same
bundle with its manifest's section set back to "calls", so both run the very
same per-block graphs. ExecuTorch runs per-block calls only (its XNNPACK
partitioner does not delegate inside a cond branch), so its rows are the trained
model exported for it as `auto` chooses. Every call is `Session.run` on one new
image, timed with runtime.profile.timing.measure in interleaved rounds: static,
then each form at each point. Sessions hold their weights as host-cpu serves them
(devices.yaml). Writes benchmarks/results/control_flow.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.evidence import PUBLISHED, RESULTS, ROOT
from benchmarks.rigs import SCALE, RiggedBundles, machine
from runtime.format.bundle import open_bundle
from runtime.format.devices import load_devices
from runtime.profile.ops import self_times
from runtime.profile.timing import measure
from runtime.rules.gated import SCALES

DATA_ROOT = ROOT.parent / "shared" / "data" / "cifar10"  # CIFAR-10 as an ImageFolder tree
TRAINED = PUBLISHED / "blocks_cifar10" / "urnet-paper-gates-100"
RIGGED = "urnet-resnet110"  # benchmarks/rigs.py's model name
CALIBRATION = 256  # random images the rigged model's BN statistics and gates are set on
GOAL_ALL_OPEN = 1.05  # the all-open path against static (issue 32)
TODAY_S02 = 1.18  # the trained model's per-block calls at S = 0.2 before the conditional graph (operating_points.md)
BATCH = 32
BATCH_SCALES = (0.2, 0.6, 1.0)
ALL_OPEN = "all open"
FORM_NAMES = {"calls": "onnxruntime, per-block calls", "graph": "onnxruntime, conditional graph",
              "executorch calls": "ExecuTorch, per-block calls"}
STATICS = {"onnxruntime static": "calls", "executorch static": "executorch calls"}  # static model: the form run on
STATIC_OF = {"calls": "onnxruntime static", "graph": "onnxruntime static", "executorch calls": "executorch static"}
NODE_KINDS = {"Conv": "Conv", "ReorderInput": "layout reorder", "ReorderOutput": "layout reorder", "If": "If"}
KINDS = (*dict.fromkeys(NODE_KINDS.values()), "other")
NODE_KINDS_NOTE = (
    "Nodes onnxruntime runs per call (its profile of the optimized graph, batch 1), by kind. *Other*: everything "
    "else: in the static model the few nodes its NCHWc convolutions did not absorb; in the conditional graph also "
    "each block's gate, the decision bookkeeping, the branches' output renames, and the residual Add and Relu, which "
    "each branch, optimized alone, runs outside its convolutions on the NCHW tensors it hands back.")


@dataclass
class Model:
    """One URNet as this benchmark times it: its bundles by form, the images it is timed on, and its points."""

    label: str
    about: str
    bundles: dict[str, Path]  # form ("graph", "calls", "executorch calls") -> bundle
    images: list[np.ndarray]  # one per timed call, in turn
    scales: tuple[float, ...]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_flow", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--images", type=int, default=16, help="distinct test images per model, each its own timed call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/control_flow_work"))
    args = parser.parse_args(argv)

    import runtime
    from trainer.data import load_split

    dataset, _ = load_split("cifar10", "test", data_root=DATA_ROOT)
    test_images = [dataset[i][0].numpy()[None] for i in range(max(args.images, BATCH))]
    random_images = np.random.default_rng(1).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    rigged, rig = rigged_bundles(args.work)
    models = [
        Model("trained CIFAR-10 URNet", f"{TRAINED.relative_to(ROOT)}, ResNet-20, 9 blocks; CIFAR-10 test images",
              trained_bundles(args.work), test_images[: args.images], SCALES),
        Model("ResNet-110 URNet, rigged gates", f"ResNet-110, 54 blocks, timed on random uint8 images. Its rig: {rig}",
              rigged, [random_images[i : i + 1] for i in range(args.images)], (SCALE,)),
    ]
    host = load_devices()["host-cpu"]
    fns = {}
    for model in models:
        sessions = {form: runtime.load(bundle, device=host, threads=args.threads) for form, bundle in model.bundles.items()}
        full = sessions["graph"].manifest.dispatch.full_path()
        points = {f"S={s:g}": {"scale": s} for s in model.scales} | {ALL_OPEN: {"path": full}}
        for i, image in enumerate(model.images):
            for form, session in sessions.items():
                for point, options in points.items():
                    fns[model.label, form, point, i] = lambda image=image, s=session, o=options: s.run(image, **o)
            for static, form in STATICS.items():  # each backend's static model, once
                if form in sessions:
                    fns[model.label, static, i] = lambda image=image, s=sessions[form]: s.run(image, static=True)
        if model is models[0]:
            batch = np.concatenate(test_images[:BATCH])
            fns |= batch_calls(sessions["graph"], sessions["calls"], batch)
    timings = measure(fns, runs=args.rounds, warmup=2)

    results = []
    for model in models:
        def ms(*key: str) -> float:  # the mean over images of each image's median
            return float(np.mean([timings[(model.label, *key, i)].median_ms for i in range(len(model.images))]))

        statics = {static: ms(static) for static, form in STATICS.items() if form in model.bundles}
        rows = []
        for point in [f"S={s:g}" for s in model.scales] + [ALL_OPEN]:
            row = {"point": point}
            for form in model.bundles:
                static = statics[STATIC_OF[form]]
                row[form] = {"ms": ms(form, point), "x_static": ms(form, point) / static}
            rows.append(row)
        results.append({"model": model.label, "about": model.about, "static_ms": statics, "rows": rows,
                        "executed_nodes": profile(model.bundles["graph"])})
    batch_static = timings["batch static"].median_ms
    batches = {str(s): {"grouped_ms": timings["batch grouped", s].median_ms,
                        "conditional_ms": timings["batch conditional", s].median_ms} for s in BATCH_SCALES}
    write(args, results, batch_static, batches, machine())
    return 0


def trained_bundles(work: Path) -> dict[str, Path]:
    """The trained URNet for onnxruntime with its conditional graph, the same bundle read per block, and ExecuTorch."""
    import exporter

    graph = work / "trained-graph"
    if not graph.exists():
        exporter.export(TRAINED, "onnx", graph, verify=False, accuracy_images=0, control_flow="graph")
    executorch = work / "trained-executorch"
    if not executorch.exists():
        exporter.export(TRAINED, "executorch", executorch, verify=False, accuracy_images=0)
    return {"graph": graph, "calls": per_block_view(graph), "executorch calls": executorch}


def rigged_bundles(work: Path) -> tuple[dict[str, Path], str]:
    """The rigged ResNet-110 URNet for onnxruntime with its conditional graph, the same bundle read per block, and
    its rig in words."""
    calibration = np.random.default_rng(0).integers(0, 256, (CALIBRATION, 32, 32, 3), dtype=np.uint8)
    graph, rig = RiggedBundles(work, calibration).export(RIGGED, "onnx", f"{RIGGED}-graph", control_flow="graph")
    return {"graph": graph, "calls": per_block_view(graph)}, rig


def profile(bundle: Path) -> dict[str, dict[str, float]]:
    """The nodes run per call by the static model, and by the conditional graph with every block forced open or
    closed (forced, so that the count does not depend on the input)."""
    manifest = open_bundle(bundle)
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    scale = np.full(1, SCALE, np.float32)
    count = len(manifest.dispatch.blocks)
    return {
        "static": executed_nodes(bundle, manifest.dispatch.reference, {"image": image}),
        **{f"conditional, {name}": executed_nodes(bundle, manifest.dispatch.conditional, {
            "image": image, "scale": scale, "force": np.full((1, count), forced, np.float32)})
           for name, forced in ((ALL_OPEN, 1.0), ("all closed", 0.0))},
    }


def executed_nodes(bundle: Path, graph: str, feed: dict[str, np.ndarray], runs: int = 20) -> dict[str, float]:
    """The nodes onnxruntime runs per call of `graph` on `feed` (its profile, after optimization), by kind: where a
    conditional graph's time goes beyond the static model's convolutions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(bundle / open_bundle(bundle).graphs[graph].artifact), options,
                                       providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kinds = Counter(NODE_KINDS.get(e["args"]["op_name"], "other") for e, _ in self_times(events))
    return {kind: kinds[kind] / runs for kind in KINDS}


def per_block_view(graph_bundle: Path) -> Path:
    """A copy of `graph_bundle` whose manifest says "calls": the very same per-block graphs, without the conditional."""
    calls = graph_bundle.with_name(graph_bundle.name + "-as-calls")
    shutil.rmtree(calls, ignore_errors=True)
    shutil.copytree(graph_bundle, calls)
    manifest = json.loads((calls / "manifest.json").read_text())
    del manifest["dispatch"]["control_flow"], manifest["dispatch"]["conditional"]
    (calls / "manifest.json").write_text(json.dumps(manifest))
    return calls


def batch_calls(graph_session, calls_session, batch: np.ndarray) -> dict:
    """A batch: the per-block dispatch grouped by gate (Session.run) against the conditional graph on the whole batch
    (its runner, on the same prepared batch: an If's one condition runs a block for all when any sample keeps it)."""
    dispatch = graph_session.manifest.dispatch
    conditional = graph_session.graphs[dispatch.conditional]
    unforced = np.full((len(batch), len(dispatch.blocks)), -1, np.float32)
    fns = {"batch static": lambda: calls_session.run(batch, static=True)}
    for s in BATCH_SCALES:
        scale = np.full(len(batch), s, dtype=np.float32)
        fns["batch grouped", s] = lambda scale=scale: calls_session.run(batch, scale=scale)
        fns["batch conditional", s] = lambda scale=scale: conditional([batch, scale, unforced])
    return fns


def goals(results: list[dict]) -> list[tuple[str, bool]]:
    trained, rigged = ({row["point"]: row for row in r["rows"]} for r in results)
    return [
        (f"trained: all-open path ≤ {GOAL_ALL_OPEN}x static (conditional graph)",
         trained[ALL_OPEN]["graph"]["x_static"] <= GOAL_ALL_OPEN),
        ("trained: faster than static at S ≥ 0.6 (conditional graph)",
         all(trained[f"S={s:g}"]["graph"]["x_static"] < 1 for s in SCALES if s >= 0.6)),
        (f"trained: S = 0.2 faster than today's {TODAY_S02}x (conditional graph)",
         trained["S=0.2"]["graph"]["x_static"] < TODAY_S02),
        (f"ResNet-110: all-open path ≤ {GOAL_ALL_OPEN}x static (conditional graph)",
         rigged[ALL_OPEN]["graph"]["x_static"] <= GOAL_ALL_OPEN),
        (f"trained, ExecuTorch: all-open path ≤ {GOAL_ALL_OPEN}x static (per-block calls; no conditional in XNNPACK)",
         trained[ALL_OPEN]["executorch calls"]["x_static"] <= GOAL_ALL_OPEN),
    ]


def write(args, results: list[dict], batch_static: float, batches: dict, host: dict) -> None:
    command = "python -m benchmarks.control_flow " + " ".join(sys.argv[1:])
    held = goals(results)
    lines = [
        "# URNet: one conditional graph per image against a call per block", "",
        f"Command: `{command}`  ",
        f"Machine: {host['machine']}, {host['cpus']} CPUs; {host['versions']}; {args.threads} thread(s), "
        "weights as host-cpu holds them (devices.yaml).", "",
        "Each model is exported once for onnxruntime with `--control-flow graph`; its per-block rows run the same "
        "bundle's per-block graphs (its manifest read as `calls`). ExecuTorch has per-block calls only: its XNNPACK "
        "partitioner does not delegate inside a `torch.cond` branch. Each figure: `Session.run` on one new image per "
        f"call, the mean over {args.images} images of each image's median over {args.rounds} interleaved rounds; "
        "ratios against the static full model of the same backend (`static=True`), timed in the same rounds.",
    ]
    for result in results:
        forms = [f for f in FORM_NAMES if f in result["rows"][0]]  # the table's column order
        statics = ", ".join(f"{name} {ms:.3f} ms" for name, ms in result["static_ms"].items())
        lines += ["", f"## {result['model']}", "", f"{result['about']}.", "", f"Static models: {statics}.", "",
                  "| point | " + " | ".join(f"{FORM_NAMES[f]} ms | x static" for f in forms) + " |",
                  "|---|" + "---|---|" * len(forms),
                  *("| " + row["point"] + " | " + " | ".join(f"{row[f]['ms']:.3f} | {row[f]['x_static']:.2f}"
                                                             for f in forms) + " |" for row in result["rows"]),
                  "", NODE_KINDS_NOTE, "", "| graph | " + " | ".join(KINDS) + " | all |", "|---|" + "---:|" * (len(KINDS) + 1),
                  *(f"| {name} | " + " | ".join(f"{nodes[k]:g}" for k in KINDS) + f" | {sum(nodes.values()):g} |"
                    for name, nodes in result["executed_nodes"].items())]
    lines += ["", f"Trained model, batches of {BATCH} (one call of each, median ms; static {batch_static:.2f} ms):", "",
              "| S | per-block, grouped by gate (Session.run) | conditional graph on the whole batch (its runner) |",
              "|---|---|---|",
              *(f"| {s} | {b['grouped_ms']:.2f} ({b['grouped_ms'] / batch_static:.2f}x) | "
                f"{b['conditional_ms']:.2f} ({b['conditional_ms'] / batch_static:.2f}x) |" for s, b in batches.items()),
              "", "Goals (issue 32):", "",
              *(f"- {goal}: {'held' if ok else '**MISS**'}" for goal, ok in held)]
    (RESULTS / "control_flow.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "control_flow.json").write_text(json.dumps(
        {"command": command, **host, "models": results, "batch_static_ms": batch_static, "batches": batches,
         "goals": dict(held)}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
