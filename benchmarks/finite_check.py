"""What refusing non-finite outputs costs: every graph call of a bundle with and without `check_finite`.

python -m benchmarks.finite_check [--rounds 200] [--work DIR]

The deployed CIFAR-10 URNet (benchmarks/weights/, 21 graphs from the stem to
the head, feature maps of 16 x 32 x 32 to 64 x 8 x 8) and the digits DRNet's
shape, exported for ONNX, each graph at batch 1 and 8, timed alone and with
the check, interleaved (runtime.profile.timing.measure), a new input on every
call, one thread. Goal: the check costs under 1% of a graph call. Writes
benchmarks/results/finite_check.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

import runtime
from benchmarks.evidence import PUBLISHED, RESULTS
from benchmarks.rigs import machine
from runtime.profile.table import POOL, graph_inputs
from runtime.profile.timing import measure
from runtime.session import check_finite

GOAL = 0.01  # the check's share of a graph call
BATCHES = (1, 8)


def graph_costs(bundle: Path, rounds: int) -> list[dict]:
    session = runtime.load(bundle, threads=1)
    rng = np.random.default_rng(0)
    fns = {}
    for name, graph in session.manifest.graphs.items():
        for batch in BATCHES:
            inputs = itertools.cycle([graph_inputs(graph, batch, rng) for _ in range(POOL)]).__next__
            run = session.graphs[name]
            fns[(name, batch, "alone")] = lambda run=run, inputs=inputs: run(inputs())
            fns[(name, batch, "checked")] = lambda run=run, inputs=inputs, name=name: check_finite(
                bundle, name, run(inputs()))
    times = measure(fns, runs=rounds, warmup=5)
    rows = []
    for name in session.manifest.graphs:
        for batch in BATCHES:
            alone, checked = times[(name, batch, "alone")].median_ms, times[(name, batch, "checked")].median_ms
            rows.append({"graph": name, "batch": batch, "alone_ms": alone, "checked_ms": checked,
                         "overhead": checked / alone - 1})
    return rows


def report_md(command: str, rows: dict[str, list[dict]], info: dict) -> str:
    every = [r for bundle in rows.values() for r in bundle]
    median = float(np.median([r["overhead"] for r in every]))
    pooled = sum(r["checked_ms"] for r in every) / sum(r["alone_ms"] for r in every) - 1
    held = "held" if pooled < GOAL else "NOT held"
    lines = [
        "# The cost of refusing non-finite outputs", "", f"Command: `{command}`", "",
        f"Machine: {info['machine']}, {info['cpus']} CPUs; {info['versions']}. One thread; medians of interleaved "
        "rounds, a new input on every call.", "",
        f"Goal: the check costs under {GOAL:.0%} of a graph call. Over all {len(every)} graph calls together: "
        f"{pooled:+.2%} ({held}); the median call {median:+.2%}, the largest {max(r['overhead'] for r in every):+.2%} "
        "(single small graphs are within the machine's noise of a few percent).", "",
        "| bundle | graph | batch | alone ms | checked ms | cost |", "|---|---|---:|---:|---:|---:|",
    ]
    for bundle, graphs in rows.items():
        lines += [f"| {bundle} | {r['graph']} | {r['batch']} | {r['alone_ms']:.4f} | {r['checked_ms']:.4f} | "
                  f"{r['overhead']:+.2%} |" for r in graphs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--work", type=Path, help="keep the bundles here (default: a new temp dir)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.finite_check", *(argv if argv is not None else sys.argv[1:])])
    import exporter

    work = args.work or Path(tempfile.mkdtemp(prefix="finite-check-"))
    rows = {}
    for label, checkpoint in (("URNet, CIFAR-10", PUBLISHED / "blocks_cifar10" / "urnet-paper-gates-100"),
                              ("DRNet, CIFAR-10", PUBLISHED / "drnet_cifar10" / "drnet")):
        bundle = work / checkpoint.name
        if not (bundle / "manifest.json").is_file():
            exporter.export(checkpoint, "onnx", bundle, accuracy_images=0, force=True)
        rows[label] = graph_costs(bundle, args.rounds)
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finite_check.json").write_text(json.dumps({"command": command, **info, "rows": rows}, indent=1) + "\n")
    (RESULTS / "finite_check.md").write_text(report_md(command, rows, info))
    print((RESULTS / "finite_check.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
