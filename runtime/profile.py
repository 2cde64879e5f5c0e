"""Measure a bundle's real latency on this device against its MACs and the device's budgets.

python -m runtime.profile --bundle BUNDLE --device NAME [--runs N] [--images FILE.npy] [--out report.json]

Every speedup is a ratio against the static full model (the manifest's
reference path) timed in the same run. MACs are conv+linear multiply-
accumulates per image, selector included.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.devices import DEFAULT_DEVICES_FILE, Device, get_device
from runtime.preprocess import prepare
from runtime.session import Session, load
from runtime.timing import Timing, measure

__all__ = ["profile", "format_report", "main"]


def _timing(t: Timing) -> dict:
    return {"median_ms": t.median_ms, "p90_ms": t.p90_ms}


def _path_calls(session: Session, image: np.ndarray) -> dict[str, tuple[int, Callable[[], object]]]:
    """Each path worth timing, as (MACs, a call sequence that takes it) on a batch-1 image.

    argmax: every path. policy: every cached path. gated: every gate open.
    """
    manifest, d, run = session.manifest, session.manifest.dispatch, session.graphs
    macs = {name: graph.macs for name, graph in manifest.graphs.items()}

    def selected(selector: str, graph: str):
        return lambda: (run[selector]([image]), run[graph]([image]))

    if d.rule == "argmax":
        return {p.name: (manifest.path_macs(p), selected(d.selector, p.graph)) for p in d.paths}
    if d.rule == "policy":
        return {c.path: (macs[d.selector] + macs[c.graph], selected(d.selector, c.graph)) for c in d.cached_paths}
    scale = np.ones(1, dtype=np.float32)

    def all_open():
        features = run[d.stem]([image, scale])[0]
        for step in d.blocks:
            features = run[step.run]([features, scale])[0]

    return {"1" * len(d.blocks): (macs[d.stem] + sum(macs[step.run] for step in d.blocks), all_open)}


def profile(session: Session, device: Device, *, runs: int = 100, warmup: int = 10, images: np.ndarray | None = None) -> dict:
    """Latency per graph and per path at batch 1, and optionally over a real mix of images."""
    manifest = session.manifest
    dispatch = manifest.dispatch
    rng = np.random.default_rng(0)
    inputs = {
        name: [rng.standard_normal(spec.shape).astype(np.float32) for spec in graph.inputs]
        for name, graph in manifest.graphs.items()
    }
    reference_graph = dispatch.reference_graph
    paths = _path_calls(session, inputs[reference_graph][0])

    def graph_call(name):
        graph, x = session.graphs[name], inputs[name]
        return lambda: graph(x)

    # One interleaved measurement, so every ratio compares calls timed side by side.
    times = measure(
        {**{("graph", n): graph_call(n) for n in manifest.graphs}, **{("path", n): call for n, (_, call) in paths.items()}},
        runs=runs, warmup=warmup,
    )
    graph_times = {n: times[("graph", n)] for n in manifest.graphs}
    path_times = {n: times[("path", n)] for n in paths}

    reference_ms = graph_times[reference_graph].median_ms
    reference_macs = manifest.graphs[reference_graph].macs
    reference_name = dispatch.reference_path if dispatch.rule == "argmax" else reference_graph
    report = {
        "bundle": str(session.bundle),
        "family": manifest.family,
        "target": manifest.target,
        "device": device.name,
        "backend": session.backend.describe(),
        "runs": runs,
        "macs_convention": manifest.macs_convention,
        "reference": {"path": reference_name, "macs": reference_macs, **_timing(graph_times[reference_graph])},
        "graphs": {
            name: {
                "macs": graph.macs,
                **_timing(graph_times[name]),
                # Below 0.01 MMACs (identity shortcuts, gates) the ratio only measures call overhead.
                "us_per_mmac": graph_times[name].median_ms * 1e3 / (graph.macs / 1e6) if graph.macs >= 10_000 else None,
            }
            for name, graph in manifest.graphs.items()
        },
        "paths": {
            name: {
                "macs": path_macs,
                **_timing(path_times[name]),
                "speedup": reference_ms / path_times[name].median_ms,
                "macs_reduction": reference_macs / path_macs,
            }
            for name, (path_macs, _) in paths.items()
        },
    }
    if images is not None:
        batch = prepare(images, manifest.preprocessing)
        report["dynamic"] = _profile_mix(session, batch, reference_graph, runs=max(3, runs // 20))

    slowest = max(paths, key=lambda name: path_times[name].median_ms)
    dearest_macs, dearest = worst_case_macs(manifest)
    checks = {
        "macs": {"value": dearest_macs, "budget": device.macs_budget, "path": dearest},
        "latency_ms": {"value": path_times[slowest].median_ms, "budget": device.latency_budget_ms, "path": slowest},
    }
    for check in checks.values():
        check["pass"] = check["value"] <= check["budget"]
    report["budgets"] = checks
    report["pass"] = all(check["pass"] for check in checks.values())
    return report


def worst_case_macs(manifest) -> tuple[int, str]:
    """The most MACs any input can cost, selector or gates included, and the path that costs it."""
    d, macs = manifest.dispatch, {name: graph.macs for name, graph in manifest.graphs.items()}
    if d.rule == "argmax":
        dearest = max(d.paths, key=manifest.path_macs)
        return manifest.path_macs(dearest), dearest.name
    per_block = sum(max(macs.get(step.run, 0), macs.get(step.skip, 0)) for step in d.blocks)
    if d.rule == "policy":
        return macs[d.selector] + macs[d.stem] + per_block + macs[d.head], "every block"
    return macs[d.stem] + per_block, "every block"


def _profile_mix(session: Session, batch: np.ndarray, reference_graph: str, *, runs: int) -> dict:
    """The dynamic model over real images against the static full model over the same images."""
    static = session.graphs[reference_graph]
    samples = [batch[i : i + 1] for i in range(len(batch))]
    result = session.run(batch, **({"scale": 1.0} if session.takes_scale else {}))

    def run_static() -> None:
        for x in samples:
            static([x])

    scale = {"scale": 1.0} if session.takes_scale else {}
    times = measure({"dynamic": lambda: session.run(batch, **scale), "static": run_static}, runs=runs, warmup=1)
    dynamic_ms = times["dynamic"].median_ms / len(batch)
    static_ms = times["static"].median_ms / len(batch)
    reference_macs = session.manifest.graphs[reference_graph].macs
    return {
        "images": len(batch),
        "rounds": runs,
        "dynamic_ms_per_image": dynamic_ms,
        "static_ms_per_image": static_ms,
        "speedup": static_ms / dynamic_ms,
        "mean_macs": float(result.macs.mean()),
        "macs_reduction": reference_macs / float(result.macs.mean()),
        "histogram": (
            {p.name: result.paths.count(p.name) for p in session.manifest.dispatch.paths}
            if session.manifest.dispatch.rule == "argmax" else dict(Counter(result.paths).most_common())
        ),
    }


def format_report(report: dict) -> str:
    ref = report["reference"]["path"]
    lines = [
        f"{report['bundle']} ({report['family']}, {report['target']}) on {report['device']}: {report['backend']}",
        f"batch 1, median of {report['runs']} runs; MACs = {report['macs_convention']}",
        "",
        f"{'graph':14} {'MMACs':>8} {'median ms':>10} {'p90 ms':>8} {'us/MMAC':>8}",
    ]
    for name, g in report["graphs"].items():
        per = f"{g['us_per_mmac']:8.1f}" if g["us_per_mmac"] is not None else f"{'-':>8}"
        lines.append(f"{name:14} {g['macs'] / 1e6:8.3f} {g['median_ms']:10.3f} {g['p90_ms']:8.3f} {per}")
    lines += ["", f"{'path':14} {'MMACs':>8} {'median ms':>10} {'p90 ms':>8} {'speedup':>8} {'MACs cut':>9}   vs static {ref}"]
    for name, p in report["paths"].items():
        lines.append(
            f"{name:14} {p['macs'] / 1e6:8.3f} {p['median_ms']:10.3f} {p['p90_ms']:8.3f} "
            f"{p['speedup']:7.2f}x {p['macs_reduction']:8.2f}x"
        )
    if "dynamic" in report:
        d = report["dynamic"]
        hist = "  ".join(f"{k}:{v}" for k, v in list(d["histogram"].items())[:6])
        hist += f"  ... ({len(d['histogram'])} distinct)" if len(d["histogram"]) > 6 else ""
        lines += [
            "",
            f"dynamic over {d['images']} images (median of {d['rounds']} rounds): {d['dynamic_ms_per_image']:.3f} ms/image "
            f"vs static {ref} {d['static_ms_per_image']:.3f} ms/image",
            f"  realized speedup {d['speedup']:.2f}x for a MACs reduction of {d['macs_reduction']:.2f}x "
            f"({d['mean_macs'] / 1e6:.3f} MMACs/image); paths {hist}",
        ]
    lines.append("")
    for name, check in report["budgets"].items():
        verdict = "pass" if check["pass"] else "FAIL"
        value, budget = (f"{check[k] / 1e6:.3f} MMACs" if name == "macs" else f"{check[k]:.3f} ms" for k in ("value", "budget"))
        lines.append(f"budget {name}: worst path {check['path']} {value} <= {budget}: {verdict}")
    lines.append("PASS" if report["pass"] else "FAIL")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--device", required=True, help="a device name from devices.yaml")
    parser.add_argument("--devices", type=Path, default=DEFAULT_DEVICES_FILE, help="devices file (default: %(default)s)")
    parser.add_argument("--backend", help="override the backend (must be one the device lists)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--images", type=Path, help=".npy batch (uint8 NHWC or normalized float32 NCHW) for the dynamic mix")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    try:
        device = get_device(args.device, args.devices)
        session = load(args.bundle, args.backend, threads=device.threads)
        if session.backend.name not in device.backends:
            raise ValueError(f"device {device.name} runs {list(device.backends)}, not {session.backend.name}")
        images = np.load(args.images, allow_pickle=False) if args.images else None
        report = profile(session, device, runs=args.runs, warmup=args.warmup, images=images)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"runtime.profile: error: {error}", file=sys.stderr)
        return 2
    report["command"] = shlex.join(["python", "-m", "runtime.profile", *(argv if argv is not None else sys.argv[1:])])
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
