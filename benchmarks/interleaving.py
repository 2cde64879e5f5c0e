"""Whether timing a bundle beside other bundles changes what it costs against its static model.

python -m benchmarks.interleaving --bundle DIR --beside DIR [DIR ...] [--images N] [--rounds N]

The bundle's points (benchmarks/rigs.py `timed_points`: its operating points,
forced paths, floor and static full model) are timed in one interleaved
measurement of their own, then again with every point of the `--beside`
bundles interleaved among them, each through `Session.run` on a stream of
single CIFAR-10 test images (`image_stream`). Every ratio compares rows of one
measurement. A shift says how much a measurement of many bundles at once
(benchmarks/latency_training.py before it timed each family apart) misstates a
device that serves one bundle.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.evidence import ROOT, write_results
from benchmarks.rigs import CALLS_PER_ROUND, image_stream, machine, timed_points
from runtime.format.devices import get_device
from runtime.profile.timing import measure
from runtime.session import load
from trainer.data import raw_images

DEVICE = "host-cpu"
STEM = "interleaving"


def streams(bundles: list[Path], images) -> dict[tuple[str, str], object]:
    """One timed sample per (bundle, point): CALLS_PER_ROUND single-image `Session.run` calls."""
    device = get_device(DEVICE)
    calls = {}
    for bundle in bundles:
        session = load(bundle, device=device)
        calls |= {(str(bundle), point): image_stream(session, images, **options)
                  for point, options in timed_points(session).items()}
    return calls


def per_image_ms(timings, bundle: Path) -> dict[str, float]:
    return {point: timing.median_ms / CALLS_PER_ROUND
            for (name, point), timing in timings.items() if name == str(bundle)}


def report(command: str, bundle: Path, beside: list[Path], alone: dict, among: dict) -> str:
    host = machine()
    lines = [
        "# A bundle timed alone and beside others",
        "",
        f"Command: `{command}`. Host: {host['machine']}, {host['cpus']} CPUs; {host['versions']}.",
        "",
        f"Bundle: `{bundle}`, timed in one measurement of its own, then with {len(beside)} other bundles' points "
        f"interleaved among its own ({', '.join(f'`{b.name}`' for b in beside)}). ms per image: the median over "
        f"interleaved rounds of {CALLS_PER_ROUND} single-image `Session.run` calls, a new test image per call.",
        "",
        "| point | alone ms | × static alone | beside others ms | × static beside others | shift |",
        "|---|---|---|---|---|---|",
    ]
    for point in alone:
        if point == "static":
            continue
        share_alone, share_among = alone[point] / alone["static"], among[point] / among["static"]
        lines.append(f"| {point} | {alone[point]:.3f} | {share_alone:.2f} | {among[point]:.3f} | {share_among:.2f} | "
                     f"{share_among / share_alone - 1:+.0%} |")
    lines.append(f"| static | {alone['static']:.3f} | 1.00 | {among['static']:.3f} | 1.00 | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle whose ratios to its static model count")
    parser.add_argument("--beside", type=Path, nargs="+", required=True, help="bundles timed among it the second time")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--images", type=int, default=200, help="CIFAR-10 test images the streams draw from")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds per measurement")
    args = parser.parse_args()
    if not (args.data_root / "test").is_dir():
        parser.error(f"no CIFAR-10 test split at {args.data_root}")
    beside = [b for b in args.beside if b.resolve() != args.bundle.resolve()]
    command = shlex.join(["python", "-m", "benchmarks.interleaving", *sys.argv[1:]])
    images, _ = raw_images("cifar10", "test", data_root=args.data_root, limit=args.images)
    alone = per_image_ms(measure(streams([args.bundle], images), runs=args.rounds, warmup=3), args.bundle)
    among = per_image_ms(measure(streams([args.bundle, *beside], images), runs=args.rounds, warmup=3), args.bundle)
    results = {"bundle": str(args.bundle), "beside": [str(b) for b in beside], "alone_ms": alone, "beside_ms": among}
    write_results(STEM, command, results, [], report(command, args.bundle, beside, alone, among))
    return 0


if __name__ == "__main__":
    sys.exit(main())
