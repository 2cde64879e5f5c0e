"""URNet with one conditional graph per image against a graph call per block, and the static model, on onnxruntime.

    flock /tmp/bench.lock python -m benchmarks.control_flow [--rounds 15] [--images 16] [--work DIR]

Exports the trained CIFAR-10 URNet (benchmarks/weights/blocks_cifar10/urnet-paper-gates-100) once with
`--control-flow graph`; the per-block view is the same bundle with its manifest's section set back to "calls",
so both run the very same per-block graphs. Every call is `Session.run` on one new image (CIFAR-10 test images),
timed with runtime.profile.timing.measure in interleaved rounds: static, then each variant at each S and on the
forced all-open path. Sessions hold their weights as host-cpu serves them (devices.yaml: weight_sharing shared).
Writes benchmarks/results/control_flow.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.evidence import ROOT
from benchmarks.rigs import machine
from runtime.format.devices import load_devices
from runtime.profile.timing import measure
from runtime.rules.gated import SCALES

DATA_ROOT = ROOT.parent / "shared" / "data" / "cifar10"  # CIFAR-10 as an ImageFolder tree
CHECKPOINT = Path("benchmarks/weights/blocks_cifar10/urnet-paper-gates-100")
RESULTS = Path("benchmarks/results")
GOAL_ALL_OPEN = 1.05  # the all-open path against static (issue 32)
BATCH = 32
TODAY_S02 = 1.18  # the per-block calls' ratio at S = 0.2 before this change (operating_points.md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_flow", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--images", type=int, default=16, help="distinct test images, each its own timed call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/control_flow_work"))
    args = parser.parse_args(argv)

    import exporter
    import runtime
    from trainer.data import load_split

    graph_bundle = args.work / "graph"
    if not graph_bundle.exists():
        exporter.export(CHECKPOINT, "onnx", graph_bundle, verify=False, accuracy_images=0, control_flow="graph")
    calls_bundle = args.work / "calls"
    shutil.rmtree(calls_bundle, ignore_errors=True)
    shutil.copytree(graph_bundle, calls_bundle)
    manifest = json.loads((calls_bundle / "manifest.json").read_text())
    del manifest["dispatch"]["control_flow"], manifest["dispatch"]["conditional"]
    (calls_bundle / "manifest.json").write_text(json.dumps(manifest))

    device = load_devices()["host-cpu"]
    sessions = {flow: runtime.load(bundle, device=device, threads=args.threads)
                for flow, bundle in (("graph", graph_bundle), ("calls", calls_bundle))}
    dataset, _ = load_split("cifar10", "test", data_root=DATA_ROOT)
    images = [dataset[i][0].numpy()[None] for i in range(args.images)]
    full = sessions["graph"].manifest.dispatch.full_path()
    points = {f"S={s:g}": {"scale": s} for s in SCALES} | {"all open": {"path": full}}
    fns = {}
    for i, image in enumerate(images):
        fns["static", "static", i] = lambda image=image: sessions["calls"].run(image, static=True)
        for flow, session in sessions.items():
            for point, options in points.items():
                fns[flow, point, i] = lambda image=image, session=session, options=options: session.run(image, **options)
    # Batches: the per-block dispatch grouped by gate (Session.run) against the conditional graph on the whole batch
    # (its runner, on the same prepared batch: an If's one condition runs a block for all when any sample keeps it).
    batch = np.concatenate([dataset[i][0].numpy()[None] for i in range(BATCH)])
    count = len(sessions["graph"].manifest.dispatch.blocks)
    conditional = sessions["graph"].graphs["conditional"]
    for s in (0.2, 0.6, 1.0):
        scale = np.full(BATCH, s, dtype=np.float32)
        fns["batch grouped", s] = lambda scale=scale: sessions["calls"].run(batch, scale=scale)
        fns["batch conditional", s] = lambda scale=scale: conditional([batch, scale, np.full((BATCH, count), -1, np.float32)])
    fns["batch static"] = lambda: sessions["calls"].run(batch, static=True)
    timings = measure(fns, runs=args.rounds, warmup=2)
    batches = {s: {"grouped_ms": timings["batch grouped", s].median_ms,
                   "conditional_ms": timings["batch conditional", s].median_ms} for s in (0.2, 0.6, 1.0)}
    batch_static = timings["batch static"].median_ms

    def ms(flow: str, point: str) -> float:  # the sum over images of each image's median, per image
        return sum(timings[flow, point, i].median_ms for i in range(len(images))) / len(images)

    static = ms("static", "static")
    rows = [{"point": point, "calls_ms": ms("calls", point), "graph_ms": ms("graph", point)} for point in points]
    for row in rows:
        row["calls_ratio"], row["graph_ratio"] = row["calls_ms"] / static, row["graph_ms"] / static
    write(args, static, rows, batch_static, batches, machine())
    return 0


def write(args, static: float, rows: list[dict], batch_static: float, batches: dict, host: dict) -> None:
    by_point = {row["point"]: row for row in rows}
    goals = [
        ("all-open path ≤ 1.05x static (graph)", by_point["all open"]["graph_ratio"] <= GOAL_ALL_OPEN),
        ("faster than static at S ≥ 0.6 (graph)", all(by_point[f"S={s:g}"]["graph_ratio"] < 1 for s in SCALES if s >= 0.6)),
        (f"S = 0.2 faster than today's {TODAY_S02}x (graph)", by_point["S=0.2"]["graph_ratio"] < TODAY_S02),
    ]
    command = "flock /tmp/bench.lock python -m benchmarks.control_flow " + " ".join(sys.argv[1:])
    lines = [
        "# URNet: one conditional graph per image against a call per block (onnxruntime)", "",
        f"Command: `{command}`  ",
        f"Machine: {host['machine']}, {host['cpus']} CPUs, **shared with other jobs** (2 cores, several workers); "
        f"{host['versions']}; onnxruntime at {args.threads} thread(s), weights as host-cpu shares them.", "",
        f"The trained CIFAR-10 URNet ({CHECKPOINT}, ResNet-20, 9 blocks), exported once with `--control-flow graph`; "
        "the per-block rows run the same bundle's per-block graphs. Each figure: `Session.run` on one new CIFAR-10 "
        f"test image per call, the mean over {args.images} images of each image's median over {args.rounds} "
        "interleaved rounds; ratios against the static model (`static=True`) timed in the same rounds.", "",
        f"Static model: {static:.3f} ms per image.", "",
        "| point | per-block calls ms | x static | conditional graph ms | x static |",
        "|---|---|---|---|---|",
        *(f"| {r['point']} | {r['calls_ms']:.3f} | {r['calls_ratio']:.2f} | {r['graph_ms']:.3f} | {r['graph_ratio']:.2f} |"
          for r in rows),
        "", f"Batches of {BATCH} (one call of each, median ms; static {batch_static:.2f} ms):", "",
        "| S | per-block, grouped by gate (Session.run) | conditional graph on the whole batch (its runner) |",
        "|---|---|---|",
        *(f"| {s:g} | {b['grouped_ms']:.2f} ({b['grouped_ms'] / batch_static:.2f}x) | "
          f"{b['conditional_ms']:.2f} ({b['conditional_ms'] / batch_static:.2f}x) |" for s, b in batches.items()),
        "", "Goals (issue 32):", "",
        *(f"- {goal}: {'held' if held else '**MISS**'}" for goal, held in goals),
    ]
    (RESULTS / "control_flow.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "control_flow.json").write_text(json.dumps(
        {"command": command, **host, "static_ms": static, "rows": rows, "batch_static_ms": batch_static,
         "batches": {str(s): b for s, b in batches.items()}, "goals": dict(goals)}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
