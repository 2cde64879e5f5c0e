"""python -m exporter --checkpoint DIR --target onnx|executorch --out BUNDLE [--force] [--no-verify]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import ParityError, UnsplittableModel, export
from exporter.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter", description="Split and export a trained dynamic model.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="output directory of `python -m trainer`")
    parser.add_argument(
        "--target", required=True, choices=sorted(TARGETS),
        help="; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()),
    )
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the parity check")
    parser.add_argument("--samples", type=int, default=64, help="images for the parity check (default 64)")
    args = parser.parse_args(argv)
    try:
        report = export(args.checkpoint, args.target, args.out, force=args.force, verify=args.verify, samples=args.samples)
    except (FileExistsError, FileNotFoundError, UnsplittableModel, ValueError) as error:
        print(f"exporter: error: {error}", file=sys.stderr)
        return 2
    except ParityError as error:
        print(f"exporter: parity check failed, no bundle written: {error}", file=sys.stderr)
        return 1
    manifest = report.manifest
    size = sum(a.bytes for a in manifest.artifacts.values())
    print(f"wrote {report.bundle}: {manifest.family} for {manifest.target}, {len(manifest.graphs)} graphs, {size / 1024:.0f} KiB")
    for path in manifest.dispatch.paths:
        print(f"  path {path.name:10} {manifest.path_macs(path) / 1e6:8.3f} MMACs (selector included)")
    if report.parity:
        print(f"  parity: {report.parity.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
