"""Measure a bundle's real latency on this device against its MACs and the device's budgets.

python -m runtime.profile --bundle BUNDLE --device NAME [--runs N] [--images FILE.npy] [--scales S ...] [--out report.json]
    (the report: a view of the latency table against the device's budgets, runtime/profile/report.py)
python -m runtime.profile table --bundle BUNDLE --device NAME [--batches 1 4 8] [--images FILE.npy] --out TABLE.json
    (the device's latency table: every graph and operating point, docs/latency_table.md)
python -m runtime.profile ops --bundle BUNDLE --device NAME [--backend B] [--runs N] [--top K]
    (each operating point's per-op breakdown, from onnxruntime's profiler or ExecuTorch's ETDump)
python -m runtime.profile costs --recipe R --target T --device NAME [--init W] --out COSTS.json
python -m runtime.profile costs --bundle BUNDLE --device NAME --out COSTS.json    (on the device itself)
    (a device cost table before training: the recipe's graphs untrained, measured; python -m trainer --cost latency)
python -m runtime.profile compare A.json B.json ... [--plot latency.png]
    (reports and tables from several devices and backends, the Android app's included, in one table)

Every speedup is a ratio against the static full model (the manifest's
reference graph) timed in the same run, both through Session.run. MACs are conv+linear multiply-
accumulates per image, selector included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from runtime.format.devices import DEFAULT_DEVICES_FILE, Device, get_device
from runtime.format.fields import FormatError
from runtime.format.files import atomic_write
from runtime.format.latency_table import PAYS, LatencyTable, walk_paths, write_latency_table
from runtime.profile.compare import compare_table, read_measurement
from runtime.profile.ops import PROFILERS, op_breakdown
from runtime.profile.report import format_report, report_of
from runtime.profile.table import REMEASURES, measure_table
from runtime.session import Session, load

__all__ = ["main", "format_table", "format_candidates"]

SUBCOMMANDS = {
    "table": "measure the device's latency table of a bundle",
    "ops": "break each operating point down op by op, from the backend's own profiler",
    "compare": "line up reports and tables from several devices and backends",
    "costs": "measure a recipe's graphs before training: the latency table python -m trainer --cost latency reads",
}
ERRORS = (ValueError, FileNotFoundError, ImportError, RuntimeError)


def _where(parser: argparse.ArgumentParser) -> None:
    """The options every measuring subcommand takes: which bundle, on which device."""
    parser.add_argument("--bundle", required=True, type=Path, help="the bundle directory")
    parser.add_argument("--device", required=True,
                        help="a device name from devices.yaml: its threads and providers are used")
    parser.add_argument("--devices", type=Path, default=DEFAULT_DEVICES_FILE, help="devices file (default: %(default)s)")


def _measuring(parser: argparse.ArgumentParser, runs: int) -> None:
    """How each row is measured, and on what: the options the report and the table share."""
    parser.add_argument("--backend", help="override the backend (must be one the device lists)")
    parser.add_argument("--runs", type=int, default=runs, help="timed calls per row (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--images", type=Path,
                        help=".npy uint8 NHWC images (np.save of an array of shape (N, H, W, 3)): they feed the "
                        "operating points, and the dynamic model is timed over them against the static one")
    parser.add_argument("--scales", type=float, nargs="+", metavar="S",
                        help="URNet bundles: the compute scales to measure (default: the S sweep 0.2 ... 1.0)")


def _session(args: argparse.Namespace) -> tuple[Device, Session]:
    device = get_device(args.device, args.devices)
    return device, load(args.bundle, args.backend, device=device)


def _measure(args: argparse.Namespace, command: str, **options) -> tuple[Session, Device, LatencyTable]:
    device, session = _session(args)
    images = np.load(args.images, allow_pickle=False) if args.images else None
    # A bar shows the rounds on a terminal; piped or logged, this line says what the next minute is spent on.
    print(f"runtime.profile: timing every graph and operating point of {args.bundle} on {device.name}, "
          f"{args.warmup} warm-up and {args.runs} interleaved rounds", file=sys.stderr, flush=True)
    with _rounds_bar(args.warmup + args.runs) as bar:
        table = measure_table(session, device, runs=args.runs, warmup=args.warmup, images=images, scales=args.scales,
                              command=command, progress=bar, **options)
    return session, device, table


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
        lines.append(f"pipeline over {p.images} images: {p.total.median_ms:.3f} ms median, p99 "
                     f"{p.total.p99_ms:.3f}; preprocessing {p.preprocess_share:.1%}, selector "
                     f"{p.selector_share:.1%}")
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
    _measuring(parser, runs=100)
    parser.add_argument("--batches", type=int, nargs="+", default=[1],
                        help="batch sizes to time each graph at; must include 1 (default: 1)")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="MAD/median above which a row is re-measured, then flagged (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the table (JSON)")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="also draw points.png (each point's latency and prediction) and fit.png into DIR")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "runtime.profile", "table", *argv])
    try:
        _, _, table = _measure(args, command, batches=args.batches, noise_threshold=args.noise)
    except ERRORS as error:
        print(f"runtime.profile table: error: {error}", file=sys.stderr)
        return 2
    write_latency_table(args.out, table)
    print(format_table(table))
    if args.plots:
        try:
            from runtime.profile.plots import plot_table

            print("plots: " + ", ".join(str(path) for path in plot_table(table, args.plots)))
        except ImportError as error:
            print(f"runtime.profile table: error: plots need matplotlib: {error}", file=sys.stderr)
            return 2
    return 0


def format_candidates(table: LatencyTable) -> str:
    """Which operating points the device runs at a worse ms per MAC than the full model: each point's latency
    saving against the static model's as a share of its MACs saving (1: latency falls as MACs do)."""
    full = table.graphs[table.reference].macs
    lines = [f"candidates on {table.device}/{table.backend}: the share of each one's MACs saving it keeps as latency "
             f"(below {PAYS:g}: it does not pay here)"]
    walk = set(walk_paths(table.block_count)) if table.block_count else set()
    for point in (p for p in table.points if p.name not in walk):  # the walk's forced paths are no candidates
        kept = table.kept_saving(point)
        if kept is None:
            lines.append(f"  {point.name:16} {point.latency.median_ms:8.3f} ms, no MACs saved: the full model's cost")
            continue
        lines.append(f"  {point.name:16} {point.latency.median_ms:8.3f} ms for {point.macs / full:.0%} of the MACs: "
                     f"keeps {kept:.2f} of the saving{'' if kept >= PAYS else ' (does not pay here)'}")
    blocks = {k: kept for k in range(table.block_count) if (kept := table.kept_block_saving(k)) is not None}
    if blocks:
        how = ("measured on the forced paths every block dropped and each block alone"
               if table.walk_ms(table.block_count) else "its graph and call, or its skip graph where it has one")
        lines.append(f"  each block left out, alone ({how}):")
        lines += [f"  block{k:<11} keeps {kept:.2f} of its saving{'' if kept >= PAYS else ' (does not pay here)'}"
                  for k, kept in blocks.items()]
    return "\n".join(lines)


def costs_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.profile costs",
        description="A device's latency table for a recipe, before training: its model exported untrained (latency "
        "depends on shapes, not weights) with every candidate its own graph, then measured through Session.run, as "
        "the table subcommand does. On a host: --recipe and --target export it (python -m exporter --recipe); on a "
        "phone or Jetson: --bundle, a bundle exported so on the host. python -m trainer --recipe R --cost latency "
        "--costs TABLE trains against it.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="the training recipe; with --target, exported here (needs torch)")
    source.add_argument("--bundle", type=Path, help="a bundle from python -m exporter --recipe, measured here")
    parser.add_argument("--target", help="--recipe: the target the model will be exported for")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS", help="--recipe: the backbone training starts from")
    parser.add_argument("--data-root", type=Path, help="--recipe: its dataset, where it is not digits")
    parser.add_argument("--device", required=True, help="a device name from devices.yaml, where the table is measured")
    parser.add_argument("--devices", type=Path, default=DEFAULT_DEVICES_FILE, help="devices file (default: %(default)s)")
    _measuring(parser, runs=100)
    parser.add_argument("--out", required=True, type=Path, help="where to write the table (JSON)")
    args = parser.parse_args(argv)
    if args.recipe and not args.target:
        parser.error("--recipe needs --target: the graphs are measured as that target runs them")
    if args.bundle and (args.target or args.init or args.data_root):
        parser.error("--target, --init and --data-root go with --recipe; a bundle knows its own")
    command = shlex.join(["python", "-m", "runtime.profile", "costs", *argv])
    with contextlib.ExitStack() as scratch:
        if args.recipe:
            args.bundle = Path(scratch.enter_context(tempfile.TemporaryDirectory())) / "bundle"
            export = [sys.executable, "-m", "exporter", "--recipe", args.recipe, "--target", args.target,
                      "--device", args.device, "--devices", str(args.devices), "--out", str(args.bundle)]
            for flag, value in (("--init", args.init), ("--data-root", args.data_root)):
                export += [flag, str(value)] if value else []
            if subprocess.run(export).returncode != 0:
                print(f"runtime.profile costs: error: exporting {args.recipe} failed (above)", file=sys.stderr)
                return 2
        try:
            _, _, table = _measure(args, command, walk=True)
        except ERRORS as error:
            print(f"runtime.profile costs: error: {error}", file=sys.stderr)
            return 2
    if table.recipe is None:
        print(f"runtime.profile costs: error: {args.bundle} names no recipe (manifest producer.recipe)", file=sys.stderr)
        return 2
    write_latency_table(args.out, table)
    print(format_table(table))
    print(format_candidates(table))
    print(f"\nwrote {args.out}: {table.recipe}'s costs on {table.device}/{table.backend}; train against them with "
          f"python -m trainer --recipe {table.recipe} --cost latency --costs {args.out}")
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
            from runtime.profile.plots import plot_latency_against_macs

            plot_latency_against_macs(measured, args.plot)
            print(f"plot: {args.plot}")
    except (FormatError, ImportError) as error:
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
    except ERRORS as error:
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
    subcommands = {"table": table_main, "ops": ops_main, "compare": compare_main, "costs": costs_main}
    if argv and argv[0] in subcommands:
        return subcommands[argv[0]](argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m runtime.profile", description=__doc__.splitlines()[0],
        epilog="subcommands (each takes --help): " + "; ".join(f"{name}: {what}" for name, what in SUBCOMMANDS.items()),
    )
    if argv and not argv[0].startswith("-"):
        parser.error(f"unknown subcommand {argv[0]!r}; choose one of {sorted(SUBCOMMANDS)}, "
                     "or give --bundle and --device for a report")
    _where(parser)
    _measuring(parser, runs=100)
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    parser.add_argument("--table", type=Path, help="also write the latency table the report is a view of")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "runtime.profile", *argv])
    try:
        session, device, table = _measure(args, command)
    except ERRORS as error:
        print(f"runtime.profile: error: {error}", file=sys.stderr)
        return 2
    report = report_of(table, session.manifest, device, command)
    print(format_report(report))
    if args.table:
        write_latency_table(args.table, table)
    if args.out:
        text = json.dumps(report.to_json(), indent=2) + "\n"
        atomic_write(args.out, lambda temporary: Path(temporary).write_text(text))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
