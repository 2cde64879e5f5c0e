"""python -m exporter --checkpoint DIR | --recipe NAME [--init WEIGHTS] --target onnx|executorch|coreml|tensorrt --out BUNDLE
                     [--device NAME] [--max-batch N] [--calibration DATA] [--force] [--no-verify]
                     [--accuracy-images N] [--precision fp32|fp16|int8] [--max-top1-drop D]
                     [the options of the checkpoint's family's split: --help lists them, family by family]"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from exporter import ACCURACY_IMAGES, ParityError, QuantizationError, UnsplittableModel, export
from exporter.quantize.check import MAX_TOP1_DROP, TOLERANCES
from exporter.calibration import load_calibration
from exporter.splits import add_family_arguments, every_candidate_options, family_option_names
from exporter.verify import TOLERANCE
from runtime.format.devices import DEFAULT_DEVICES_FILE
from runtime.format.manifest import PRECISIONS
from runtime.format.targets import TARGETS
from trainer.checkpoint import read_config
from trainer.recipes import get_recipe
from trainer.train import untrained_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter", description="Split and export a trained dynamic model.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="output directory of `python -m trainer`")
    source.add_argument("--recipe", help="export the recipe's model untrained, every candidate its own graph: latency "
                        "depends on shapes, not weights, so this is what a device cost table measures before training "
                        "(python -m runtime.profile costs)")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS", help="--recipe: the backbone it would start from")
    parser.add_argument("--data-root", type=Path, help="--recipe: its dataset, where it is not digits")
    parser.add_argument(
        "--target", required=True, choices=sorted(TARGETS),
        help="; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()),
    )
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the parity check")
    parser.add_argument("--samples", type=int, default=64, help="images for the parity check (default 64)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="parity: logits may differ by this x max(1, the largest |logit|) (default %(default)g)")
    parser.add_argument("--device", help="a device of the devices file (--devices) for precision, compute units and batch "
                        "sizes (default: per target)")
    parser.add_argument("--devices", type=Path, default=DEFAULT_DEVICES_FILE,
                        help="the devices file --device names an entry of (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch every graph takes (default: the device's)")
    parser.add_argument(
        "--calibration", metavar="DATA",
        help="images that drive a split's plan (fused segments, cached paths) and calibrate int8 graphs, each on the "
        "inputs routed to it: FILE.npy, train[:N] or test[:N] of the checkpoint's dataset (default, for a split that "
        "plans on them and for int8: train:512)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS,
        help="; ".join(f"{t.name}: {'/'.join(t.precisions)}" for t in TARGETS.values())
        + " (default: the device's precision, else the target's first)",
    )
    parser.add_argument("--max-top1-drop", type=float, default=MAX_TOP1_DROP, metavar="D",
                        help=f"int8: refuse the bundle if it loses more top-1 than D against fp32 on held-out images; "
                        f"logits may move {TOLERANCES['int8']:g} x max(1, |logit|) from eager (default %(default)g)")
    parser.add_argument("--accuracy-images", type=int, default=ACCURACY_IMAGES, metavar="N",
                        help="measure each operating point's top-1 on the first N test images, for budgets to rank "
                        "points by; 0: do not (default %(default)s)")
    add_family_arguments(parser)
    args = parser.parse_args(argv)
    split_options = {name: value for name, value in vars(args).items() if name in family_option_names()}
    if args.checkpoint and (args.init or args.data_root):
        parser.error("--init and --data-root go with --recipe; a checkpoint knows its own")
    say = lambda line: print(f"exporter: {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        with contextlib.ExitStack() as scratch:
            checkpoint, plan, accuracy_images = args.checkpoint, True, args.accuracy_images
            if args.recipe:
                recipe = get_recipe(args.recipe)
                say(f"building {recipe.name}'s model untrained ({'from ' + str(args.init) if args.init else 'seeded'})")
                checkpoint = untrained_checkpoint(recipe, Path(scratch.enter_context(tempfile.TemporaryDirectory())),
                                                  init=args.init, data_root=args.data_root)
                split_options = {**every_candidate_options(recipe.family), **split_options}
                plan, accuracy_images = False, 0  # untrained: no plan to make, no top-1 worth measuring
            calibration = load_calibration(args.calibration, read_config(checkpoint)) if args.calibration else None
            report = export(
                checkpoint, args.target, args.out, force=args.force, verify=args.verify, samples=args.samples,
                tolerance=args.tolerance,
                calibration=calibration, device=args.device, devices=args.devices, max_batch=args.max_batch,
                accuracy_images=accuracy_images, precision=args.precision, calibration_source=args.calibration,
                max_top1_drop=args.max_top1_drop, progress=say, plan=plan, **split_options,
            )
    except (FileExistsError, FileNotFoundError, UnsplittableModel, ValueError) as error:
        print(f"exporter: error: {error}", file=sys.stderr)
        return 2
    except ParityError as error:
        print(f"exporter: parity check failed, no bundle written: {error}", file=sys.stderr)
        return 1
    except QuantizationError as error:
        print(f"exporter: quantization check failed, no bundle written: {error}", file=sys.stderr)
        return 1
    manifest = report.manifest
    size = sum(a.bytes for a in manifest.artifacts.values())
    device = manifest.producer.get("device", "no device entry")
    precision = manifest.quantization.precision if manifest.quantization else (
        manifest.build.precision if manifest.build else "fp32")
    built = "; engines are built and cached on the device at first load" if manifest.target == "tensorrt" else ""
    print(
        f"wrote {report.bundle}: {manifest.family} for {manifest.target} on {device} (--device), {precision} "
        f"(--precision), {len(manifest.graphs)} graphs, batches of 1 to {manifest.max_batch}, {size / 1024:.0f} KiB{built}"
    )
    print(manifest.dispatch.describe(manifest.graphs))
    if manifest.quantization:
        print(f"  {describe_quantization(manifest)}")
    if manifest.accuracy:
        top1 = ", ".join(f"{p.name} {p.top1:.2%}" for p in manifest.accuracy.points)
        print(f"  top-1 ({manifest.accuracy.source}): {top1}")
    if report.parity:
        print(f"  parity: {report.parity.summary()}")
    elif manifest.quantization is None:
        print(f"  parity: not checked (no backend for {manifest.target} runs here)")
    return 0


def describe_quantization(manifest) -> str:
    q = manifest.quantization
    precisions = ", ".join(f"{g.name} {g.precision}" for g in manifest.graphs.values())
    lines = [f"precision {q.precision}: {precisions}"]
    if q.calibration:
        lines.append(f"calibrated on {q.calibration.images} images ({q.calibration.source}), each graph on its routed "
                     f"inputs; topped up by forcing paths: {q.calibration.forced or 'none'}")
    if q.selector:
        lines.append(f"selector {q.selector.precision}: int8 routed {q.selector.agreement:.1%} of held-out images as "
                     f"fp32 (needs {q.selector.threshold:.0%})")
    if q.check:
        c = q.check
        top1 = f"top-1 {c.top1:.2%} against fp32 {c.top1_fp32:.2%}, " if c.top1 is not None else ""
        lines.append(f"on {c.images} held-out images: {top1}{c.path_agreement:.1%} same path, {c.top1_agreement:.1%} "
                     f"same top-1, logits within {c.max_abs_diff:.3g} of eager (tolerance {c.tolerance:.3g})")
    else:
        lines.append("not checked here: no backend for this target runs on this machine")
    return "\n  ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
