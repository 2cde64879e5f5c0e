"""Operating points on this machine: how well the latency table predicts, the accuracy-latency frontier, and
the load-adaptive controller against fixed and load-only serving, then a 10,000-request soak.

python -m benchmarks.operating_points [--checkpoints DIR ...] [--backends onnx executorch] [--runs 60]
    [--images 48] [--accuracy-images 2000] [--requests 300 600 300] [--soak 10000] [--work DIR] [--quick]

Each trained checkpoint (default: every one of the evidence runs that exists,
and the digits demo's) is exported per backend and loaded on host-cpu, one
thread. Then, in order:

1. `runtime.profile table`'s measurement (runtime.profile.table.measure_table):
   each operating point's prediction from its graph calls, against its
   measured median through Session.run;
2. per image, end to end: the prediction for that image's own graph calls
   (runtime.profile.table.predict_run) against its measured median, over
   `--images` real test images timed in interleaved rounds;
3. the frontier: each point's top-1 on `--accuracy-images` labelled test
   images, against its median latency;
4. the controller (onnxruntime only): Poisson arrivals at 0.5x, 2x and 0.5x
   the rate the static full model sustains, objective OBJECTIVE x its
   latency, served three ways on the same stream and images: the controller
   (input-adaptive within its budget), load-only switching (Dynamic-OFA: the
   budget forces one path for every image), and the fixed full model. Missed
   deadlines are requests over the objective; effective accuracy counts
   correct answers within it (INFaaS, Model-Switching);
5. the soak (onnxruntime, the first checkpoint that has a controller run):
   `--soak` requests at the full model's rate through the controller, resident
   memory sampled along it;
6. the top ops per point, from each backend's own profiler
   (runtime.profile.ops: onnxruntime's profiling JSON, ExecuTorch's ETDump).

Service times are real; only queueing is simulated (runtime.serving.controller.replay).
Writes benchmarks/results/operating_points.{md,json} and figures in
benchmarks/results/operating_points/; a --quick run, one of chosen
--checkpoints or --backends, or one that misses a default checkpoint, writes operating_points_smoke instead
(ignored by git).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import runtime
from benchmarks.evidence import TRAINED, results_name
from benchmarks.rigs import HOST_TARGETS, machine
from exporter import export
from exporter.calibration import load_calibration
from runtime.format.devices import get_device
from runtime.format.files import atomic_write
from runtime.format.latency_table import write_latency_table
from runtime.profile.ops import op_breakdown
from runtime.profile.plots import plot_controller_trace, plot_frontier, plot_table
from runtime.profile.table import measure_table, predict_run
from runtime.profile.timing import measure
from runtime.serving.controller import AdaptiveController, Served, replay, soak
from runtime.session import RunResult, Session
from trainer.checkpoint import read_config
from trainer.data import raw_images

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEVICE = "host-cpu"
DATA_ROOT = ROOT.parent / "shared" / "data" / "cifar10"
BLOCK_FAMILIES = ("blockdrop", "urnet")  # their export plan needs calibration images
WITHIN = 0.10  # a prediction "holds" within +-10% of the measured median (nn-Meter's criterion)
GOALS = {"per point": 0.95, "per image": 0.90, "within objective": 0.99, "fewer missed": 1.6, "soak growth": 0.05}
OBJECTIVE = 6.0  # the p99 objective, in multiples of the static full model's median latency
SETTLE = 60  # requests after each rate step before the objective is held to account
RATES = (0.5, 2.0, 0.5)  # multiples of the rate the static full model sustains


class LoadOnly(AdaptiveController):
    """Dynamic-OFA's switching: the budget picks one path, and every image takes it.

    The selector still runs (Session.run(path=...) counts it), so this pays
    the selector's cost that a network without one would not."""

    def serve(self, image: np.ndarray, budget_ms: float) -> RunResult:
        fitting = [path for path, ms in self.tabled.items() if ms <= budget_ms] or [min(self.tabled, key=self.tabled.get)]
        return self.session.run(image, path=max(fitting, key=self.tabled.get))


class FixedFull(AdaptiveController):
    """The static full model for every request, whatever the load."""

    def serve(self, image: np.ndarray, budget_ms: float) -> RunResult:
        return self.session.run(image, static=True)


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.quick:
        args.runs, args.images, args.accuracy_images, args.requests, args.soak = 10, 8, 200, [100, 200, 100], 1500
    command = shlex.join(["python", "-m", "benchmarks.operating_points", *(argv if argv is not None else sys.argv[1:])])
    chosen = {str(c): c for c in args.checkpoints} if args.checkpoints else TRAINED
    missing = {label: str(path) for label, path in chosen.items() if not (path / "config.json").is_file()}
    rows, frontiers, soaked = [], {}, None
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        figures = work / "figures"  # replaces the report's figures whole: no figure of an earlier run survives
        shutil.rmtree(figures, ignore_errors=True)
        figures.mkdir(parents=True)
        for label, checkpoint in chosen.items():
            if label in missing:
                continue
            config = read_config(checkpoint)
            images, labels = raw_images(config["data"]["dataset"], "test", data_root=args.data_root,
                                        limit=max(args.accuracy_images, args.images))
            for target in args.backends:
                row, served = _measure_bundle(label, checkpoint, config, target, images, labels, args, work, figures,
                                              command)
                if served is not None and soaked is None and args.soak:
                    print(f"{label}: soak of {args.soak} requests", flush=True)
                    soaked = _soak(served, images, args.soak) | {"label": label}
                frontiers[f"{label}, {row['backend']}"] = [(p["name"], p["measured_ms"], p["top1"]) for p in row["points"]]
                rows.append(row)
        plot_frontier(frontiers, figures / "frontier.png")
        name = results_name("operating_points", reduced=args.quick or args.checkpoints is not None or bool(missing)
                            or set(args.backends) != set(HOST_TARGETS))
        report = {"command": command, "machine": machine(), "device": DEVICE, "goals": GOALS, "within": WITHIN,
                  "objective_x_static": OBJECTIVE, "settle": SETTLE, "rates": RATES, "rows": rows, "soak": soaked,
                  "missing": missing, "figures": name}
        text, payload = format_report(report), json.dumps(report, indent=2) + "\n"
        atomic_write(RESULTS / f"{name}.json", lambda path: path.write_text(payload))
        atomic_write(RESULTS / f"{name}.md", lambda path: path.write_text(text))
        shutil.rmtree(RESULTS / name, ignore_errors=True)
        shutil.copytree(figures, RESULTS / name)
    print(text)
    return 0


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", type=Path,
                        help="checkpoint directories (default: benchmarks.evidence.TRAINED, the deployed models)")
    parser.add_argument("--backends", nargs="+", default=list(HOST_TARGETS), choices=tuple(HOST_TARGETS))
    parser.add_argument("--runs", type=int, default=60, help="timed rounds of the table (default: %(default)s)")
    parser.add_argument("--images", type=int, default=48, help="images timed end to end (default: %(default)s)")
    parser.add_argument("--accuracy-images", type=int, default=2000, help="labelled images per frontier point")
    parser.add_argument("--requests", type=int, nargs=3, default=[300, 600, 300], metavar="N",
                        help="requests in each phase of the rate steps 0.5x, 2x, 0.5x (default: %(default)s)")
    parser.add_argument("--soak", type=int, default=10_000, help="requests of the soak; 0 skips it")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work", type=Path, help="where bundles and tables go (default: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, images and requests")
    return parser


def _measure_bundle(label: str, checkpoint: Path, config: dict, target: str, images: np.ndarray, labels: np.ndarray,
                    args: argparse.Namespace, work: Path, figures: Path, command: str) -> tuple[dict, Session | None]:
    """The checkpoint's bundle for `target`: its table, points, per-image predictions, top ops and, on onnxruntime,
    the controller. Returns the row, and the session the controller served (None: not run)."""
    device = get_device(DEVICE)
    bundle = work / f"{checkpoint.name}-{target}"
    if not bundle.is_dir():
        calibration = (load_calibration("train:256", config | {"data_root": str(args.data_root)})
                       if config["family"] in BLOCK_FAMILIES else None)
        export(checkpoint, target, bundle, calibration=calibration, device=DEVICE)
    session = runtime.load(bundle, HOST_TARGETS[target], device=device)
    print(f"{label} on {session.backend.name}: measuring the table", flush=True)
    table = measure_table(session, device, runs=args.runs, images=images[:16], command=command)
    table_file = work / f"{checkpoint.name}-{target}.table.json"
    write_latency_table(table_file, table)
    plot_table(table, figures / f"{checkpoint.name}-{target}")
    row = {"label": label, "checkpoint": str(checkpoint), "family": config["family"],
           "backend": session.backend.name, "static_ms": table.static.median_ms,
           "dispatch_ms_per_call": table.dispatch_ms_per_call,
           "fit": asdict(table.fit) if table.fit else None, "noisy": table.noisy_rows,
           "points": _points(session, table, images[: args.accuracy_images], labels[: args.accuracy_images]),
           "images": _per_image(session, table, images[: args.images], runs=max(5, args.runs // 4))}
    row["ops"] = op_breakdown(bundle, device, backend=session.backend.name, runs=max(5, args.runs // 3), top=3)
    if session.backend.name != "onnxruntime":
        return row, None
    served = runtime.load(bundle, device=device, table=table_file)
    row["controller"] = _controller(served, images, labels, args.requests, figures / checkpoint.name)
    return row, served


def _points(session: Session, table, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Each operating point: measured and predicted median, MACs, and top-1 on the labelled images."""
    rows = {row.name: row for row in table.points}
    points = []
    manifest = session.manifest
    for point in manifest.dispatch.operating_points(manifest.graphs):
        row = rows[point.name]
        top1 = float(np.mean(session.run(images, **point.options).logits.argmax(1) == labels))
        points.append({"name": point.name, "macs": row.macs, "measured_ms": row.latency.median_ms,
                       "predicted_ms": row.predicted_ms, "noisy": row.latency.noisy, "top1": top1})
    return points


def _per_image(session: Session, table, images: np.ndarray, *, runs: int) -> list[dict]:
    """Per image, end to end through Session.run: its path, the table's prediction and the measured median."""
    singles = [images[i : i + 1] for i in range(len(images))]
    measured = measure({i: (lambda x=x: session.run(x)) for i, x in enumerate(singles)}, runs=runs, warmup=2)
    return [{"path": session.run(x).paths[0], "predicted_ms": predict_run(session, table, x),
             "measured_ms": measured[i].median_ms} for i, x in enumerate(singles)]


def _arrivals(rate: float, phases: list[tuple[float, int]], seed: int = 0) -> np.ndarray:
    """Poisson arrivals: per phase, (multiple of `rate`, requests)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(np.concatenate([rng.exponential(1 / (factor * rate), count) for factor, count in phases]))


def _controller(session: Session, images: np.ndarray, labels: np.ndarray, requests: list[int], traces: Path) -> list[dict]:
    """The rate steps RATES, and, when its cheapest point cannot sustain their peak, steps that peak at 0.9x the
    rate that point sustains: served by the controller, load-only switching (path bundles) and the fixed full model."""
    full_ms = session.table.static.median_ms
    reach = 0.9 * full_ms / min(p.latency.median_ms for p in session.table.points)
    steps = {"issue": RATES}
    if reach < max(RATES):
        steps["reach"] = (RATES[0], round(reach, 2), RATES[2])
    return [_rate_steps(session, images, labels, list(zip(rates, requests)),
                        traces.with_name(f"{traces.name}-{key}-controller.png")) | {"steps": key}
            for key, rates in steps.items()]


def _rate_steps(session: Session, images: np.ndarray, labels: np.ndarray, phases: list, trace: Path) -> dict:
    full_ms = session.table.static.median_ms
    objective = OBJECTIVE * full_ms
    arrivals = list(_arrivals(1e3 / full_ms, phases))
    picks = [images[i % len(images)][None] for i in range(len(arrivals))]
    truth = np.array([labels[i % len(labels)] for i in range(len(arrivals))])
    policies = {"controller": AdaptiveController, "fixed full": FixedFull}
    if not session.takes_scale:
        policies["load only"] = LoadOnly
    bounds = np.cumsum([0, *(count for _, count in phases)])
    settled = np.concatenate([np.arange(b + SETTLE, e) for b, e in zip(bounds, bounds[1:])])
    results = {}
    for policy, kind in policies.items():
        served = replay(kind(session, objective), picks, arrivals)
        if policy == "controller":
            plot_controller_trace(served, objective, trace)
        results[policy] = _served_summary(served, truth, objective, settled, bounds)
    return {"objective_ms": objective, "full_ms": full_ms, "phases": phases, "policies": results}


def _served_summary(served: list[Served], truth: np.ndarray, objective: float, settled: np.ndarray,
                    bounds: np.ndarray) -> dict:
    latency = np.array([s.latency_ms for s in served])
    correct = np.array([s.logits.argmax() for s in served]) == truth
    on_time = latency <= objective
    return {
        "in_order": [s.request for s in served] == list(range(len(served))),
        "within_after_settling": float(on_time[settled].mean()),
        "p99_per_phase": [float(np.percentile(latency[b + SETTLE : e], 99)) for b, e in zip(bounds, bounds[1:])],
        "missed": int((~on_time).sum()),
        "accuracy": float(correct.mean()),
        "effective_accuracy": float((correct & on_time).mean()),
        "paths": {p: int(n) for p, n in zip(*np.unique([s.path for s in served], return_counts=True))},
    }


def _soak(session: Session, images: np.ndarray, requests: int) -> dict:
    full_ms = session.table.static.median_ms
    arrivals = list(_arrivals(1e3 / full_ms, [(1.0, requests)], seed=1))
    picks = [images[i % len(images)][None] for i in range(requests)]
    start = time.perf_counter()
    result = soak(AdaptiveController(session, OBJECTIVE * full_ms), picks, arrivals, warmup=min(1000, requests // 5))
    return {"requests": result.requests, "warmup": result.warmup, "growth": result.growth,
            "within_objective": result.within_objective, "resident_mb": result.resident_mb,
            "wall_s": time.perf_counter() - start, "errors": 0}


def _share_within(pairs) -> float:
    errors = [abs(predicted / measured - 1) for predicted, measured in pairs]
    return float(np.mean([e <= WITHIN for e in errors]))


def _verdict(holds: bool) -> str:
    return "**holds**" if holds else "**does not hold**"


def format_report(report: dict) -> str:
    lines = [
        "# Operating points on host-cpu: predictions, frontier, controller, soak", "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['machine']}, {report['machine']['cpus']} cores; {report['machine']['versions']}.  ",
        "One thread per backend (devices.yaml host-cpu); every timing is a median of interleaved rounds through "
        "`Session.run`, a new image on every call. Latency predictions: runtime/profile/table.py.", "",
    ]
    lines += _predictions_section(report)
    lines += _frontier_section(report)
    lines += _controller_section(report)
    lines += _soak_section(report)
    lines += _ops_section(report["rows"])
    if report["missing"]:
        lines += ["", "## Not measured", "", *(f"- {label}: no checkpoint at `{path}` (its evidence run "
                                               "publishes it; the demo writes the digits one)." for label, path in report["missing"].items())]
    return "\n".join(lines) + "\n"


def _predictions_section(report: dict) -> list[str]:
    rows = report["rows"]
    lines = [
        "## 1. Predictions against measurement", "",
        f"A prediction holds within ±{report['within']:.0%} of the measured median (nn-Meter's criterion). Per point: "
        "each operating point's graph calls at their batch-1 medians, plus preprocessing, the session's own cost "
        "(calibrated once, on the static model) and the rule's dispatch cost per further call (measured with the "
        "graph calls replayed). Per image: the same, for the calls that image made.", "",
        "| bundle | backend | static ms | dispatch µs per call | points within | images within | fit | noisy rows |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    all_points, all_images = [], []
    for row in rows:
        points = [(p["predicted_ms"], p["measured_ms"]) for p in row["points"]]
        images = [(i["predicted_ms"], i["measured_ms"]) for i in row["images"]]
        all_points += points
        all_images += images
        fit = row["fit"]
        fit_text = f"{fit['ms_per_gmac']:.2f} ms/GMAC + {fit['ms_per_call']:.3f} ms/call, R² {fit['r2']:.3f}" if fit else "-"
        lines.append(f"| {row['label']} | {row['backend']} | {row['static_ms']:.3f} | "
                     f"{row['dispatch_ms_per_call'] * 1e3:.1f} | {_share_within(points):.0%} "
                     f"of {len(points)} | {_share_within(images):.0%} of {len(images)} | {fit_text} | "
                     f"{', '.join(row['noisy']) or 'none'} |")
    if rows:
        per_point, per_image = _share_within(all_points), _share_within(all_images)
        lines += ["", f"- Goal ≥ {GOALS['per point']:.0%} of per-point predictions within ±10%: {per_point:.1%} of "
                  f"{len(all_points)}, {_verdict(per_point >= GOALS['per point'])}.",
                  f"- Goal ≥ {GOALS['per image']:.0%} of per-image end-to-end predictions within ±10%: {per_image:.1%} "
                  f"of {len(all_images)}, {_verdict(per_image >= GOALS['per image'])}."]
    return lines


def _frontier_section(report: dict) -> list[str]:
    lines = ["", "## 2. The frontier: top-1 against median latency", "",
             "Each point forced on every image (a path, or URNet's S), its top-1 on the labelled test images. "
             f"Figure: `{report['figures']}/frontier.png`.", "",
             "| bundle | backend | point | MMACs | measured ms | predicted ms | top-1 |", "|---|---|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        for p in row["points"]:
            lines.append(f"| {row['label']} | {row['backend']} | {p['name']} | {p['macs'] / 1e6:.1f} | "
                         f"{p['measured_ms']:.3f} | {p['predicted_ms']:.3f} | {p['top1']:.2%} |")
    return lines


def _controller_section(report: dict) -> list[str]:
    lines = ["", "## 3. The controller under rate steps (onnxruntime)", "",
             f"Poisson arrivals at {' → '.join(f'{r:g}×' for r in report['rates'])} the rate the static full model "
             "sustains (the issue's steps) and, where the bundle's cheapest point cannot sustain that peak, steps "
             "peaking at 0.9× the rate it does (within reach); objective "
             f"{report['objective_x_static']:g}× the full model's median latency, end to end with queueing. "
             f"'Within' counts requests from {report['settle']} after each step. Load only (Dynamic-OFA) forces the "
             "budget's path on every image; it has no meaning for URNet, whose gates always adapt. Traces: "
             f"`{report['figures']}/<bundle>-issue-controller.png` and `-reach-controller.png`.", "",
             "| bundle | steps | objective ms | policy | within objective | p99 per phase (ms) | missed | top-1 | "
             "effective top-1 |", "|---|---|---:|---|---:|---|---:|---:|---:|"]
    verdicts = []
    for row in report["rows"]:
        for control in row.get("controller", []):
            steps = " → ".join(f"{r:g}×" for r, _ in control["phases"])
            for name, p in control["policies"].items():
                lines.append(f"| {row['label']} | {steps} | {control['objective_ms']:.2f} | {name} | "
                             f"{p['within_after_settling']:.1%} | {' / '.join(f'{x:.1f}' for x in p['p99_per_phase'])} "
                             f"| {p['missed']} | {p['accuracy']:.2%} | {p['effective_accuracy']:.2%} |")
            verdicts += _controller_verdicts(f"{row['label']}, {steps}", control["policies"])
    return [*lines, "", *verdicts]


def _controller_verdicts(where: str, policies: dict) -> list[str]:
    """The controller's goals under one set of rate steps, against the fixed full model and load-only switching."""
    ours, full = policies["controller"], policies["fixed full"]
    fewer = full["missed"] / max(ours["missed"], 1)
    verdicts = [
        f"- {where}: within the objective after settling {ours['within_after_settling']:.1%} "
        f"(goal ≥ {GOALS['within objective']:.0%}), "
        f"{_verdict(ours['within_after_settling'] >= GOALS['within objective'])}; "
        f"{fewer:.1f}× fewer missed deadlines than the fixed full model "
        f"({ours['missed']} against {full['missed']}; goal ≥ {GOALS['fewer missed']:g}×), "
        f"{_verdict(fewer >= GOALS['fewer missed'])}; every request answered in order: "
        f"{all(p['in_order'] for p in policies.values())}."]
    if "load only" in policies:
        load = policies["load only"]
        better = ours["effective_accuracy"] > load["effective_accuracy"]
        verdicts.append(f"  Against load-only switching: effective top-1 {ours['effective_accuracy']:.2%} "
                        f"against {load['effective_accuracy']:.2%} (top-1 {ours['accuracy']:.2%} against "
                        f"{load['accuracy']:.2%}), {_verdict(better)}.")
    return verdicts


def _soak_section(report: dict) -> list[str]:
    soaked = report["soak"]
    if not soaked:
        return ["", "## 4. Soak", "", "Not run."]
    mb = [m for _, m in soaked["resident_mb"]]
    return ["", "## 4. Soak", "",
            f"{soaked['requests']} requests through the controller at the full model's rate ({soaked['label']}, "
            f"onnxruntime) in {soaked['wall_s']:.0f} s, no errors, every request answered in order. Resident "
            f"memory {min(mb):.1f}–{max(mb):.1f} MB; growth after the first {soaked['warmup']} requests "
            f"{soaked['growth']:+.2%} (goal under {GOALS['soak growth']:.0%}), "
            f"{_verdict(soaked['growth'] < GOALS['soak growth'])}. Within the objective after warm-up: "
            f"{soaked['within_objective']:.1%}."]


def _ops_section(rows: list[dict]) -> list[str]:
    lines = ["", "## 5. Where the time goes: the top ops per point", "",
             "From each backend's own profiler (`python -m runtime.profile ops`): onnxruntime's profiling JSON, and "
             "ExecuTorch's ETDump read with the Inspector. Kernel time per image, its top three op types, and the "
             "share of kernel time per provider (XNNPACK against portable kernels outside the delegate).", "",
             "| bundle | backend | point | kernel ms | top ops (share) | providers |", "|---|---|---|---:|---|---|"]
    for row in rows:
        for point, ops in row["ops"].items():
            top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops["top_ops"])
            providers = ", ".join(f"{name} {share:.0%}" for name, share in ops["providers"].items())
            lines.append(f"| {row['label']} | {row['backend']} | {point} | {ops['kernel_ms_per_image']:.3f} | {top} | "
                         f"{providers} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
