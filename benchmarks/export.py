"""Does the export plan turn dropped blocks into saved time? BlockDrop CIFAR ResNet-110, batch 1.

python -m benchmarks.export [--images 64] [--rounds 7]

A BlockDrop ResNet-110 whose policy drops about half of the 54 blocks, over
16 distinct paths, is exported three times per backend: the naive split (one
graph per block) and the calibrated plan (fused segments) caching the top 8
or all 16 paths.
Each bundle runs the same images against the static full model, interleaved
in one measurement. Latency depends on shapes, not weight values, so the
weights are random; the policy is rigged to the usage pattern under study.
Writes benchmarks/results/export.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

import exporter
import runtime
from benchmarks.rigs import BLOCKS, DEPTH, HOST_TARGETS, UNDECIDED, normalized, rigged_blockdrop, write_static_model
from runtime.format.devices import get_device
from runtime.profile.report import report_of
from runtime.profile.table import measure_table
from trainer.checkpoint import save_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = 2**UNDECIDED  # distinct paths the rigged policy takes


def cached_share(manifest, histogram: dict[str, int]) -> float:
    """Share of the timed images whose path runs as one cached graph."""
    cached = {c.path for c in manifest.dispatch.cached_paths}
    return sum(n for path, n in histogram.items() if path in cached) / sum(histogram.values())


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--calibration", type=int, default=256)
    args = parser.parse_args()
    command = shlex.join(["python", "-m", "benchmarks.export", *sys.argv[1:]])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    calibration = rng.integers(0, 256, (args.calibration, 32, 32, 3), dtype=np.uint8)
    model, config = rigged_blockdrop(calibration)  # the policy splits on the calibration images, not the timed ones
    calibration = normalized(calibration)

    rows, work = [], Path(tempfile.mkdtemp(prefix="export-bench-"))
    checkpoint = work / "checkpoint"
    save_checkpoint(checkpoint, model, config)
    plans = {
        "naive per-block split": {"cache_paths": 0},
        **{f"fused segments + top-{k} cached paths": {"calibration": calibration, "cache_paths": k}
           for k in (PATHS // 2, PATHS)},
    }
    for target, backend in HOST_TARGETS.items():
        for plan, options in plans.items():
            out = work / f"{target}-{len(rows)}"
            report = exporter.export(checkpoint, target, out, **options)
            rows.append({"target": target, "plan": plan, "graphs": len(report.manifest.graphs), "bundle_bytes": size(out),
                         "parity": report.parity.summary() if report.parity else None,
                         **measure_bundle(out, backend, images, args.rounds)})
            print(json.dumps(rows[-1]), flush=True)

    static = {target: size(write_static_model(model, "blockdrop", target, work / f"static-{target}", max_batch=1))
              for target in HOST_TARGETS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps({"command": command, "rows": rows, "static_bytes": static}, indent=2))
    (RESULTS / "export.md").write_text(report_md(command, args, rows, static))
    print((RESULTS / "export.md").read_text())
    return 0


def measure_bundle(bundle: Path, backend: str, images: np.ndarray, rounds: int) -> dict:
    """The bundle's latency table on host-cpu over `images`: the dynamic model against the static one."""
    device = get_device("host-cpu")
    session = runtime.load(bundle, backend, threads=device.threads)
    table = measure_table(session, device, runs=rounds * 20, warmup=3, images=images)
    dynamic = report_of(table, session.manifest, device).dynamic
    latency_cut = 1 - 1 / dynamic.speedup
    macs_cut = 1 - 1 / dynamic.macs_reduction
    return {
        "backend": session.backend.describe(),
        "mean_blocks": float(np.mean([p.count("1") for p in session.run(images).paths])),
        "distinct_paths": len(dynamic.histogram),
        "cached_share": cached_share(session.manifest, dynamic.histogram),
        "static_ms": dynamic.static_ms_per_image, "dynamic_ms": dynamic.dynamic_ms_per_image,
        "dynamic_rounds": dynamic.rounds, "speedup": dynamic.speedup, "macs_reduction": dynamic.macs_reduction,
        "realized": latency_cut / macs_cut,
    }


def report_md(command: str, args, rows: list[dict], static: dict) -> str:
    lines = [
        f"# Export plans: BlockDrop CIFAR ResNet-{DEPTH} ({BLOCKS} blocks), batch 1, host CPU",
        "",
        f"Command: `{command}`",
        "",
        (f"{args.images} images per round, {args.rounds * 20} timing rounds of the latency table "
        f"(`runtime.profile.table.measure_table`) and {rows[0]['dynamic_rounds'] if rows else '-'} interleaved rounds "
        "of dynamic vs static over the images; medians. The static full model is the "
        "manifest's reference graph, timed in the same run. MACs: conv+linear multiply-accumulates per image, "
        "policy included. *Realized* = latency reduction / MACs reduction; the goal is >= 0.9."),
        "",
        "| target | plan | graphs | bundle size | vs static model | blocks run | distinct paths | images on a cached path | static ms | dynamic ms | speedup | MACs reduction | realized |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['plan']} | {r['graphs']} | {r['bundle_bytes'] / 1e6:.2f} MB | "
            f"{r['bundle_bytes'] / static[r['target']]:.2f}x | {r['mean_blocks']:.1f}/{BLOCKS} | {r['distinct_paths']} | "
            f"{r['cached_share']:.0%} | "
            f"{r['static_ms']:.2f} | {r['dynamic_ms']:.2f} | {r['speedup']:.2f}x | {r['macs_reduction']:.2f}x | {r['realized']:.2f} |"
        )
    lines += ["", "Backends and parity:", ""]
    for r in rows:
        lines.append(f"- {r['target']}, {r['plan']}: {r['backend']}; parity {r['parity']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
