"""Measure a bundle's real latency on this device against its MACs and the device's budgets.

python -m runtime.profile --bundle BUNDLE --device NAME [--runs N] [--images FILE.npy] [--out report.json]
python -m runtime.profile table --bundle BUNDLE --device NAME [--batches 1 4 8] [--images FILE.npy] --out TABLE.json
    (the device's latency table: every graph and operating point, docs/latency_table.md)
python -m runtime.profile ops --bundle BUNDLE --device NAME [--backend B] [--runs N] [--top K]
    (each operating point's per-op breakdown, from onnxruntime's profiler or ExecuTorch's ETDump)
python -m runtime.profile compare A.json B.json ... [--plot latency.png]
    (reports and tables from several devices and backends, the Android app's included, in one table)

Every speedup is a ratio against the static full model (the manifest's
reference graph) timed in the same run, both through Session.run. MACs are conv+linear multiply-
accumulates per image, selector included.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from runtime.compare import compare_table, read_measurement
from runtime.devices import DEFAULT_DEVICES_FILE, Device, get_device
from runtime.latency_table import LatencyTable, write_latency_table
from runtime.lookup_table import latency_key
from runtime.manifest import BundleError
from runtime.op_profile import PROFILERS, op_breakdown
from runtime.operating_points import POOL, REMEASURES, graph_inputs, measure_table
from runtime.preprocess import prepare
from runtime.session import Session, load
from runtime.timing import Timing, measure

__all__ = ["profile", "format_report", "main"]

def _timing(t: Timing) -> dict:
    return {"median_ms": t.median_ms, "p90_ms": t.p90_ms}


def _cycle(items: list) -> Callable[[], object]:
    """Each call returns the next item, so that no call sees the input of the one before."""
    return itertools.cycle(items).__next__


def profile(session: Session, device: Device, *, runs: int = 100, warmup: int = 10, images: np.ndarray | None = None) -> dict:
    """Latency per graph, and per path through `Session.run`, at batch 1; optionally over a real mix of images.

    Graphs are timed by calling the backend directly. Paths and the static
    full model are timed through the public API, each call on a new image,
    all interleaved in one measurement so that every ratio compares calls
    timed side by side.
    """
    manifest = session.manifest
    dispatch, graphs = manifest.dispatch, manifest.graphs
    rng = np.random.default_rng(0)
    image = graphs[dispatch.reference].inputs[0].shape
    next_image = _cycle([rng.standard_normal((1, *image)).astype(np.float32) for _ in range(POOL)])
    paths = dispatch.probe_paths(graphs)

    def graph_call(name):
        run, inputs = session.graphs[name], _cycle([graph_inputs(graphs[name], 1, rng) for _ in range(POOL)])
        return lambda: run(inputs())

    def path_call(path):
        return lambda: session.run(next_image(), path=path)

    times = measure(
        {
            **{("graph", n): graph_call(n) for n in graphs},
            **{("path", n): path_call(n) for n in paths},
            ("static",): lambda: session.run(next_image(), static=True),
        },
        runs=runs, warmup=warmup,
    )
    static = times[("static",)]
    reference_macs = graphs[dispatch.reference].macs
    report = {
        "bundle": str(session.bundle),
        "family": manifest.family,
        "target": manifest.target,
        "device": device.name,
        "backend": session.backend.describe(),
        "latency_key": latency_key(device.name, session.backend.name),
        "runs": runs,
        "macs_convention": manifest.macs_convention,
        "reference": {"path": dispatch.reference, "macs": reference_macs, **_timing(static)},
        "graphs": {
            name: {
                "macs": graph.macs,
                **_timing(times[("graph", name)]),
                # Below 0.01 MMACs (identity shortcuts, gates) the ratio only measures call overhead.
                "us_per_mmac": times[("graph", name)].median_ms * 1e3 / (graph.macs / 1e6) if graph.macs >= 10_000 else None,
            }
            for name, graph in graphs.items()
        },
        "paths": {
            name: {
                "macs": macs,
                **_timing(times[("path", name)]),
                "speedup": static.median_ms / times[("path", name)].median_ms,
                "macs_reduction": reference_macs / macs,
            }
            for name, macs in paths.items()
        },
    }
    if images is not None:
        batch = prepare(images, manifest.preprocessing)
        report["dynamic"] = _profile_mix(session, batch, runs=max(3, runs // 20))

    slowest = max(paths, key=lambda name: times[("path", name)].median_ms)
    dearest_macs, dearest = dispatch.worst_case(graphs)
    checks = {
        "macs": {"value": dearest_macs, "budget": device.macs_budget, "path": dearest},
        "latency_ms": {"value": times[("path", slowest)].median_ms, "budget": device.latency_budget_ms, "path": slowest},
    }
    for check in checks.values():
        check["pass"] = check["value"] <= check["budget"]
    report["budgets"] = checks
    report["pass"] = all(check["pass"] for check in checks.values())
    return report


def _profile_mix(session: Session, batch: np.ndarray, *, runs: int) -> dict:
    """The dynamic model over real images against the static full model over the same images.

    One image per call (the latency a user waits for), and the whole set as
    one batch (throughput), both through `Session.run`.
    """
    singles = [batch[i : i + 1] for i in range(len(batch))]
    result = session.run(batch)

    def one_by_one(**options):
        return lambda: [session.run(x, **options) for x in singles]

    times = measure(
        {
            "dynamic": one_by_one(),
            "static": one_by_one(static=True),
            "dynamic_batched": lambda: session.run(batch),
            "static_batched": lambda: session.run(batch, static=True),
        },
        runs=runs, warmup=1,
    )
    per_image = {name: t.median_ms / len(batch) for name, t in times.items()}
    reference_macs = session.manifest.graphs[session.manifest.dispatch.reference].macs
    return {
        "images": len(batch),
        "rounds": runs,
        "dynamic_ms_per_image": per_image["dynamic"],
        "static_ms_per_image": per_image["static"],
        "speedup": per_image["static"] / per_image["dynamic"],
        "batched_dynamic_ms_per_image": per_image["dynamic_batched"],
        "batched_static_ms_per_image": per_image["static_batched"],
        "batched_speedup": per_image["static_batched"] / per_image["dynamic_batched"],
        "mean_macs": float(result.macs.mean()),
        "macs_reduction": reference_macs / float(result.macs.mean()),
        "histogram": dict(Counter(result.paths).most_common()),
    }


def format_report(report: dict) -> str:
    ref = report["reference"]["path"]
    lines = [
        f"{report['bundle']} ({report['family']}, {report['target']}) on {report['device']}: {report['backend']}",
        f"batch 1 through Session.run, a new input per call, median of {report['runs']} interleaved rounds; MACs = {report['macs_convention']}",
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
            f"  as one batch of {d['images']}: {d['batched_dynamic_ms_per_image']:.3f} vs "
            f"{d['batched_static_ms_per_image']:.3f} ms/image, speedup {d['batched_speedup']:.2f}x",
        ]
    lines.append("")
    for name, check in report["budgets"].items():
        verdict = "pass" if check["pass"] else "FAIL"
        value, budget = (f"{check[k] / 1e6:.3f} MMACs" if name == "macs" else f"{check[k]:.3f} ms" for k in ("value", "budget"))
        lines.append(f"budget {name}: worst path {check['path']} {value} <= {budget}: {verdict}")
    lines.append("PASS" if report["pass"] else "FAIL")
    return "\n".join(lines)


def _where(parser: argparse.ArgumentParser) -> None:
    """The options every measuring subcommand takes: which bundle, on which device."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle directory")
    parser.add_argument("--device", required=True,
                        help="a device name from devices.yaml: its threads and providers are used")
    parser.add_argument("--devices", type=Path, default=DEFAULT_DEVICES_FILE, help="devices file (default: %(default)s)")


def format_table(table: LatencyTable) -> str:
    lines = [
        f"{table.bundle} ({table.family}) on {table.device}: {table.backend_detail}",
        f"median of {table.runs} interleaved runs after {table.warmup} warm-up, a new input per call; "
        f"rows with MAD/median above {table.noise_threshold:g} re-measured",
        "",
        f"{'graph':16} {'MMACs':>8} " + " ".join(f"{'b' + str(b) + ' ms':>9}" for b in next(iter(table.graphs.values())).batches),
    ]
    for g in table.graphs.values():
        lines.append(f"{g.name:16} {g.macs / 1e6:8.3f} " + " ".join(
            f"{t.median_ms:8.3f}{'!' if t.noisy else ' '}" for t in g.batches.values()))
    lines += ["", f"{'point':16} {'MMACs':>8} {'calls':>6} {'median':>8} {'p99':>8} {'predicted':>9} {'error':>7}"]
    for point in table.points:
        t = point.latency
        lines.append(
            f"{point.name:16} {point.macs / 1e6:8.3f} {sum(point.calls.values()):6.1f} {t.median_ms:8.3f} "
            f"{t.p99_ms:8.3f} {point.predicted_ms:9.3f} {point.error:+7.1%}{' noisy' if t.noisy else ''}"
        )
    lines += ["", f"preprocessing {table.preprocess.median_ms:.3f} ms, session overhead {table.session_overhead_ms:.3f} "
              f"ms per run and {table.dispatch_ms_per_call:.4f} ms per further graph call (static full model "
              f"{table.static.median_ms:.3f} ms through Session.run); predictions within "
              f"10%: {table.within_tolerance:.0%} of {len(table.points)} points"]
    if table.fit:
        f = table.fit
        lines.append(f"fit: latency = {f.ms_per_gmac:.3f} ms/GMAC x MACs + {f.ms_per_call:.4f} ms x calls + "
                     f"{f.constant_ms:.3f} ms, R^2 {f.r2:.3f} over {f.points} graphs and points")
    if table.pipeline:
        p = table.pipeline
        lines.append(f"pipeline over {p['images']} images: {p['total']['median_ms']:.3f} ms median, p99 "
                     f"{p['total']['p99_ms']:.3f}; preprocessing {p['preprocess_share']:.1%}, selector "
                     f"{p['selector_share']:.1%}")
    if table.noisy_rows:
        lines.append(f"NOISY after {REMEASURES} re-measurements: {', '.join(table.noisy_rows)}")
    return "\n".join(lines)


@contextlib.contextmanager
def _rounds_bar(total: int) -> Iterator[Callable[[], object] | None]:
    """A tqdm bar over measurement rounds (re-measured rows extend it), or None where tqdm is not installed:
    a device needs numpy and one backend, nothing more."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    with tqdm(total=total, desc="rounds", unit="round", leave=False, disable=None) as bar:
        def advance() -> None:
            if bar.n >= bar.total:
                bar.total += total
            bar.update()
        yield advance


def table_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.profile table",
        description="Measure the device's latency table of a bundle: every graph across batch sizes, every operating "
        "point (paths, configurations, URNet's S sweep) through Session.run, with median, p90, p99 and MAD; "
        "noisy rows re-measured and flagged; each point's latency predicted from its graph calls, and a fit "
        "latency ~ MACs + calls. Format: docs/latency_table.md.",
    )
    _where(parser)
    parser.add_argument("--backend", help="override the backend (must be one the device lists)")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per row (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1],
                        help="batch sizes to time each graph at; must include 1 (default: 1)")
    parser.add_argument("--images", type=Path,
                        help=".npy uint8 NHWC images: they feed the points, and the pipeline row times them")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="MAD/median above which a row is re-measured, then flagged (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the table (JSON)")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="also draw points.png (each point's latency and prediction) and fit.png into DIR")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "runtime.profile", "table", *argv])
    try:
        device = get_device(args.device, args.devices)
        session = load(args.bundle, args.backend, device=device)
        if session.backend.name not in device.backends:
            raise ValueError(f"device {device.name} runs {list(device.backends)}, not {session.backend.name}")
        images = np.load(args.images, allow_pickle=False) if args.images else None
        with _rounds_bar(args.warmup + args.runs) as bar:
            table = measure_table(session, device, runs=args.runs, warmup=args.warmup, batches=args.batches,
                                  images=images, noise_threshold=args.noise, command=command, progress=bar)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        print(f"runtime.profile table: error: {error}", file=sys.stderr)
        return 2
    write_latency_table(args.out, table)
    print(format_table(table))
    if args.plots:
        try:
            from runtime.plots import plot_table

            print("plots: " + ", ".join(str(path) for path in plot_table(table, args.plots)))
        except ImportError as error:
            print(f"runtime.profile table: error: plots need matplotlib: {error}", file=sys.stderr)
            return 2
    return 0


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.profile compare",
        description="Line up the paths and operating points of several profile reports or latency tables "
        "(any devices and backends, the Android app's report included): median latency at batch 1, and the speedup "
        "against the static full model measured in the same run.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="profile reports (--out) or latency tables (table --out)")
    parser.add_argument("--plot", type=Path, help="also draw latency against MACs into this PNG")
    args = parser.parse_args(argv)
    try:
        measured = [read_measurement(path) for path in args.files]
        print(compare_table(measured))
        if args.plot:
            from runtime.plots import plot_latency_against_macs

            plot_latency_against_macs(measured, args.plot)
            print(f"plot: {args.plot}")
    except (BundleError, ImportError) as error:
        print(f"runtime.profile compare: error: {error}", file=sys.stderr)
        return 2
    return 0


def ops_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.profile ops",
        description="Per operating point, the backend profiler's per-op kernel times summed by op type: the top ops, and "
        "the share of kernel time on each provider (onnxruntime's profiling JSON; ExecuTorch's ETDump).",
    )
    _where(parser)
    parser.add_argument("--backend", choices=sorted(PROFILERS),
                        help="whose profiler (default: the first of the bundle's target that has one)")
    parser.add_argument("--runs", type=int, default=20, help="profiled runs per point, after one warm-up (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="ops listed per point (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the breakdown as JSON")
    args = parser.parse_args(argv)
    try:
        report = op_breakdown(args.bundle, get_device(args.device, args.devices), backend=args.backend,
                              runs=args.runs, top=args.top)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, BundleError) as error:
        print(f"runtime.profile ops: error: {error}", file=sys.stderr)
        return 2
    for point, row in report.items():
        ops = ", ".join(f"{o['op']} {o['ms_per_image']:.3f} ms ({o['share']:.0%})" for o in row["top_ops"])
        providers = ", ".join(f"{p} {share:.0%}" for p, share in row["providers"].items())
        print(f"{point:16} {row['kernel_ms_per_image']:.3f} ms of kernels: {ops}; on {providers}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ops"]:
        return ops_main(argv[1:])
    if argv[:1] == ["table"]:
        return table_main(argv[1:])
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m runtime.profile", description=__doc__.splitlines()[0])
    _where(parser)
    parser.add_argument("--backend", help="override the backend (must be one the device lists)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--images", type=Path, help=".npy batch (uint8 NHWC or normalized float32 NCHW) for the dynamic mix")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    try:
        device = get_device(args.device, args.devices)
        session = load(args.bundle, args.backend, device=device)
        if session.backend.name not in device.backends:
            raise ValueError(f"device {device.name} runs {list(device.backends)}, not {session.backend.name}")
        images = np.load(args.images, allow_pickle=False) if args.images else None
        report = profile(session, device, runs=args.runs, warmup=args.warmup, images=images)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        print(f"runtime.profile: error: {error}", file=sys.stderr)
        return 2
    report["command"] = shlex.join(["python", "-m", "runtime.profile", *argv])
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
