"""Do int8 and dynamic savings compound? fp32 and int8 bundles of the same checkpoints, static and dynamic.

python -m benchmarks.quantization [--checkpoints DIR ...] [--backends onnx executorch] [--images 2000]
    [--rounds 15] [--scale 0.6] [--work DIR]

Each checkpoint (default: the deployed CIFAR-10 evidence runs, committed under
benchmarks/weights/, and the digits demo's DRNet) is exported fp32 and int8 (`python -m exporter
--precision int8`, calibrated on the first 512 training images, each graph
on the inputs routed to it) for each backend, on host-cpu with one thread.
Then, through `Session.run`:

- top-1 on `--images` test images: static fp32, static int8 (the bundle's
  static full model, `static=True`), dynamic fp32, dynamic int8, and how often
  the int8 bundle takes the fp32 bundle's path;
- latency at batch 1, the four interleaved in one runtime.profile.timing.measure
  run, a new test image on every call, `--rounds` rounds of 20 calls each;
- the compounding figure: (static fp32 / dynamic int8) against
  (static fp32 / static int8) x (static MACs / dynamic MACs), the product of
  the two savings taken alone. Goal: at least GOAL_KEPT of it, at under 1 pp of
  top-1 against dynamic fp32.

URNet runs at S = `--scale` (its S = 1 runs every block). Weights are the
trained checkpoints'; nothing is rigged. Writes
benchmarks/results/quantization.{md,json}; a run of chosen --checkpoints or --backends, or
one that misses a default checkpoint, writes quantization_smoke instead (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

import runtime
from benchmarks.evidence import TRAINED, results_name
from benchmarks.rigs import CALLS_PER_ROUND, HOST_TARGETS, image_stream, machine
from exporter import export
from exporter.calibration import load_calibration
from runtime.format.devices import get_device
from runtime.format.files import atomic_write
from runtime.profile.timing import measure
from trainer.checkpoint import read_config
from trainer.data import raw_images

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA_ROOT = ROOT.parent / "shared" / "data" / "cifar10"
GOAL_KEPT = 0.85
GOAL_TOP1_DROP = 0.01
CALIBRATION = 512
DEVICE = "host-cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", type=Path, help="default: benchmarks.evidence.TRAINED, the deployed models")
    parser.add_argument("--backends", nargs="+", default=list(HOST_TARGETS), choices=tuple(HOST_TARGETS))
    parser.add_argument("--images", type=int, default=2000, help="test images for top-1 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=0.6, help="URNet's S (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work", type=Path, help="where bundles go (default: a temporary directory)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.quantization", *(argv if argv is not None else sys.argv[1:])])
    chosen = {str(c): c for c in args.checkpoints} if args.checkpoints else TRAINED
    missing = {label: str(path) for label, path in chosen.items() if not (path / "config.json").is_file()}
    device = get_device(DEVICE)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        for label, checkpoint in chosen.items():
            if label in missing:
                continue
            config = read_config(checkpoint) | {"data_root": str(args.data_root)}
            images, labels = raw_images(config["data"]["dataset"], "test", data_root=args.data_root, limit=args.images)
            calibration = load_calibration(f"train:{CALIBRATION}", config)
            for target in args.backends:
                bundles = {}
                for precision in ("fp32", "int8"):
                    bundles[precision] = work / f"{checkpoint.name}-{target}-{precision}"
                    if not bundles[precision].is_dir():
                        print(f"{label}: exporting {target} {precision}", flush=True)
                        export(checkpoint, target, bundles[precision], precision=precision, calibration=calibration,
                               calibration_source=f"{config['data']['dataset']} train, first {CALIBRATION} images",
                               device=DEVICE)
                sessions = {p: runtime.load(b, HOST_TARGETS[target], device=device) for p, b in bundles.items()}
                rows.append({"label": label, "family": config["family"], **_measure(sessions, images, labels, args)})
                print(json.dumps(rows[-1]["latency_ms"]), flush=True)
    report = {"command": command, "machine": machine(), "rows": rows, "missing": missing, "goal_kept": GOAL_KEPT,
              "goal_top1_drop": GOAL_TOP1_DROP, "calibration_images": CALIBRATION, "scale": args.scale}
    text, payload = format_report(report), json.dumps(report, indent=2) + "\n"
    name = results_name("quantization", reduced=args.checkpoints is not None or bool(missing)
                        or set(args.backends) != set(HOST_TARGETS))
    atomic_write(RESULTS / f"{name}.json", lambda path: path.write_text(payload))
    atomic_write(RESULTS / f"{name}.md", lambda path: path.write_text(text))
    print(text)
    return 0


def _measure(sessions: dict, images: np.ndarray, labels: np.ndarray, args) -> dict:
    fp32, int8 = sessions["fp32"], sessions["int8"]
    options = {"scale": args.scale} if fp32.takes_scale else {}
    runs = {
        "static fp32": (fp32, {"static": True}), "static int8": (int8, {"static": True}),
        "dynamic fp32": (fp32, options), "dynamic int8": (int8, options),
    }
    results = {name: session.run(images, **extra) for name, (session, extra) in runs.items()}
    top1 = {name: float(np.mean(r.logits.argmax(1) == labels)) for name, r in results.items()}
    same_path = float(np.mean([a == b for a, b in zip(results["dynamic fp32"].paths, results["dynamic int8"].paths)]))
    pool = images[:256]
    times = measure({name: image_stream(session, pool, **extra) for name, (session, extra) in runs.items()},
                    runs=args.rounds, warmup=2)
    latency = {name: t.median_ms / CALLS_PER_ROUND for name, t in times.items()}
    static_macs = float(results["static fp32"].macs.mean())
    macs_saving = static_macs / float(results["dynamic fp32"].macs.mean())
    int8_saving = latency["static fp32"] / latency["static int8"]
    together = latency["static fp32"] / latency["dynamic int8"]
    sizes = {p: sum(a.bytes for a in s.manifest.artifacts.values()) for p, s in sessions.items()}
    quantization = int8.manifest.quantization
    return {
        "backend": fp32.backend.name, "options": options, "top1": top1, "same_path": same_path, "latency_ms": latency,
        "spread": {name: t.spread for name, t in times.items()}, "static_mmacs": static_macs / 1e6,
        "dynamic_mmacs": float(results["dynamic fp32"].macs.mean()) / 1e6, "macs_saving": macs_saving,
        "int8_saving": int8_saving, "dynamic_fp32_saving": latency["static fp32"] / latency["dynamic fp32"],
        "together": together, "kept": together / (int8_saving * macs_saving), "bytes": sizes,
        "selector": None if quantization.selector is None else vars(quantization.selector),
        "precisions": {g.name: g.precision for g in int8.manifest.graphs.values()},
    }


def format_report(report: dict) -> str:
    lines = [
        "# Quantization and dynamic savings, compounded (host-cpu, one thread, batch 1)", "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['machine']}, {report['machine']['cpus']} cores; {report['machine']['versions']}.  ",
        f"int8: calibrated on {report['calibration_images']} training images, each graph on the inputs the "
        "runtime's dispatch routes to it (exporter/quantize). Trained weights, real policies, nothing rigged. "
        "Latency: medians of interleaved rounds through `Session.run`, a new test image on every call. "
        f"URNet at S = {report['scale']:g}.", "",
        "## Top-1 and paths", "",
        "| model | backend | static fp32 | static int8 | dynamic fp32 | dynamic int8 | same path | selector |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        t, s = row["top1"], row["selector"]
        selector = f"{s['precision']} ({s['agreement']:.1%} agree)" if s else "none"
        lines.append(f"| {row['label']} | {row['backend']} | {t['static fp32']:.2%} | {t['static int8']:.2%} | "
                     f"{t['dynamic fp32']:.2%} | {t['dynamic int8']:.2%} | {row['same_path']:.1%} | {selector} |")
    lines += ["", "## Latency and the compounding figure", "",
              "Saving = static fp32 latency / the other. Product = int8 saving (static) x MACs saving (dynamic); "
              f"kept = (static fp32 / dynamic int8) / product. Goal: kept ≥ {report['goal_kept']:.2f} at under "
              f"{report['goal_top1_drop']:.0%} top-1 lost against dynamic fp32.", "",
              "| model | backend | static fp32 ms | static int8 ms | dynamic fp32 ms | dynamic int8 ms | int8 saving | "
              "MACs saving | dynamic fp32 saving | together | product | kept | top-1 lost | goal |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in report["rows"]:
        ms, t = row["latency_ms"], row["top1"]
        product = row["int8_saving"] * row["macs_saving"]
        lost = t["dynamic fp32"] - t["dynamic int8"]
        holds = row["kept"] >= report["goal_kept"] and lost < report["goal_top1_drop"]
        verdict = ("n/a: no dynamic saving to compound" if row["macs_saving"] <= 1
                   else "**holds**" if holds else "**does not hold**")
        lines.append(
            f"| {row['label']} | {row['backend']} | {ms['static fp32']:.3f} | {ms['static int8']:.3f} | "
            f"{ms['dynamic fp32']:.3f} | {ms['dynamic int8']:.3f} | {row['int8_saving']:.2f}× | "
            f"{row['macs_saving']:.2f}× | {row['dynamic_fp32_saving']:.2f}× | {row['together']:.2f}× | {product:.2f}× | "
            f"{row['kept']:.2f} | {lost * 100:+.2f} pp | {verdict} |")
    lines += ["", "## Bundle sizes", "", "| model | backend | fp32 | int8 | int8 / fp32 |", "|---|---|---:|---:|---:|"]
    for row in report["rows"]:
        b = row["bytes"]
        lines.append(f"| {row['label']} | {row['backend']} | {b['fp32'] / 1024:.0f} KiB | {b['int8'] / 1024:.0f} KiB | "
                     f"{b['int8'] / b['fp32']:.2f} |")
    lines += ["", "fp32 bundles store each convolution once for every resolution or path (BN kept as a per-channel "
              "affine after it); int8 folds each BN set into its own copy of the weights, so a bundle with several "
              "BN sets does not shrink 4×."]
    if report["missing"]:
        lines += ["", "## Not measured", "", *(f"- {label}: no checkpoint at `{path}` (its evidence run publishes it; "
                                               "the demo writes the digits one)." for label, path in
                                               report["missing"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
