"""What ARM kernels decide, against x86: the same bundles, the same images, per image path, logits and top-1.

Three steps, run by scripts/arm_check.sh (the `run` step on both machines):

    python scripts/arm_compare.py prepare WORK [--data-root DIR] [--images 1000]    # x86: bundles + images
    python scripts/arm_compare.py run WORK --backend onnxruntime --out x86-onnxruntime.npz --margins  # x86
    python scripts/arm_compare.py run WORK --backend onnxruntime --out arm-onnxruntime.npz            # aarch64
    python scripts/arm_compare.py report WORK --x86 X.npz ... --arm A.npz ... [--out benchmarks/results/arm]

`prepare` needs the export extra (torch); `run` needs numpy and the runtime
with one backend, nothing else, so that it runs in the emulated device
install; `report` needs numpy. No timing: under emulation it means nothing.

Per image, besides the batched `Session.run` (the path, the logits), `run
--margins` (on x86: one image at a time is too slow under emulation) records its decision margin: how far the closest decision the dispatch made
for it was from going the other way (runtime/rules: a scored-path selector's
best score minus the runner-up, a keep-probability's distance to 0.5, a
gate logit's distance to 0). Where ARM and x86 take different paths, the
margins say whether near-ties are the cause.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

import runtime
from runtime.format.files import atomic_write
from runtime.format.targets import TARGETS

IMAGES = 1000
BATCH = 100  # images per Session.run call
SCALE = 0.6  # URNet's S, as benchmarks/quantization.py runs it: gates decide, neither all open nor all closed
CALIBRATION = "train:512"  # the exporter's default int8 calibration, and the block families' export plan
PRECISIONS = ("fp32", "int8")
EXPORT_TARGETS = ("onnx", "executorch")
CHECKPOINTS = {  # the committed CIFAR-10 checkpoints the benchmarks deploy (benchmarks/evidence.py: TRAINED)
    "drnet": "benchmarks/weights/drnet_cifar10/drnet",
    "blockdrop": "benchmarks/weights/blocks_cifar10/blockdrop-finetune-30",
    "urnet": "benchmarks/weights/blocks_cifar10/urnet-paper-gates-100",
}
GOALS = {  # per precision: the share of images on the same path; fp32 also bounds logits and top-1
    "fp32": {"same_path": 0.999, "max_logit_delta": 1e-3, "top1_pp": 0.1},
    "int8": {"same_path": 0.99},
}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Comparison:
    """One bundle on one backend, ARM against x86, over the same images."""

    bundle: str
    backend: str
    precision: str
    images: int
    same_path: float
    max_logit_delta: float  # over the images whose path agrees
    top1_x86: float
    top1_arm: float
    same_top1: float  # share of images with the same predicted class
    flips: int
    flip_margins: list[float]  # each flipped image's decision margin on x86
    close_calls: int  # images whose x86 margin is within the largest flipped margin (0 without flips)
    closest_margin: float  # the smallest x86 margin of any image: how near a tie came, flipped or not
    verdict: str

    @property
    def top1_pp(self) -> float:
        return 100 * (self.top1_arm - self.top1_x86)


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    args.step(args)
    return 0


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(required=True)
    prepare_step = steps.add_parser("prepare", help="x86: export the bundles, decode the test images")
    prepare_step.add_argument("work", type=Path)
    prepare_step.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    prepare_step.add_argument("--images", type=int, default=IMAGES)
    prepare_step.add_argument("--families", nargs="+", choices=sorted(CHECKPOINTS), default=sorted(CHECKPOINTS))
    prepare_step.add_argument("--targets", nargs="+", choices=EXPORT_TARGETS, default=EXPORT_TARGETS)
    prepare_step.set_defaults(step=prepare)
    run_step = steps.add_parser("run", help="run every bundle of one backend on the images")
    run_step.add_argument("work", type=Path)
    run_step.add_argument("--backend", required=True, choices=sorted({t.backend for t in TARGETS.values()}))
    run_step.add_argument("--out", type=Path, required=True)
    run_step.add_argument("--batch", type=int, default=BATCH)
    run_step.add_argument("--limit", type=int, help="the first N images only (default: all of them)")
    run_step.add_argument("--bundles", nargs="+", help="these bundles only, by name (default: every one)")
    run_step.add_argument("--margins", action="store_true",
                          help="also each image's decision margin, one image at a time (the x86 side: cheap there)")
    run_step.set_defaults(step=run)
    report_step = steps.add_parser("report", help="compare ARM with x86 and write the results")
    report_step.add_argument("work", type=Path)
    report_step.add_argument("--x86", type=Path, nargs="+", required=True)
    report_step.add_argument("--arm", type=Path, nargs="+", required=True)
    report_step.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "arm")
    report_step.add_argument("--command", default=None, help="the command that produced the run, for the report")
    report_step.add_argument("--note", action="append", default=[], help="a line the report states (repeatable)")
    report_step.set_defaults(step=report)
    return parser


# ------------------------------------------------------------------ prepare (x86, the export extra)

def prepare(args: argparse.Namespace) -> None:
    """The bundles (each committed checkpoint x target x precision) and the images, under WORK; kept when there."""
    from exporter import export
    from exporter.calibration import load_calibration
    from trainer.checkpoint import read_config
    from trainer.data import raw_images

    bundles = args.work / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        checkpoint = CHECKPOINTS[family]
        config = read_config(ROOT / checkpoint) | {"data_root": str(args.data_root)}
        calibration = load_calibration(CALIBRATION, config)
        for target in args.targets:
            for precision in PRECISIONS:
                out = bundles / f"{family}-{target}-{precision}"
                if (out / "manifest.json").is_file():
                    continue
                print(f"exporting {out.name}", flush=True)
                export(ROOT / checkpoint, target, out, precision=precision, calibration=calibration,
                       calibration_source=f"cifar10 {CALIBRATION}", device="host-cpu")
    images, labels = raw_images("cifar10", "test", data_root=args.data_root, limit=args.images)
    for name, array in (("images.npy", images), ("labels.npy", labels)):
        atomic_write(args.work / name, lambda path, a=array: _save(path, a))
    print(f"{len(images)} images, {len(list(bundles.iterdir()))} bundles in {args.work}")


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as stream:  # np.save to a path would add .npy to atomic_write's staging name
        np.save(stream, array)


# ------------------------------------------------------------------ run (numpy + runtime: both machines)

def run(args: argparse.Namespace) -> None:
    """Every bundle this backend runs, on every image: batched paths and logits, then each image's margin."""
    images = np.load(args.work / "images.npy")[: args.limit]
    arrays: dict[str, np.ndarray] = {}
    for bundle in sorted((args.work / "bundles").iterdir()):
        if not _runs_on(bundle, args.backend) or (args.bundles and bundle.name not in args.bundles):
            continue
        session = runtime.load(bundle, args.backend, threads=1)
        options = {"scale": SCALE} if session.takes_scale else {}
        results = [session.run(images[i : i + args.batch], **options) for i in range(0, len(images), args.batch)]
        arrays[f"{bundle.name}.logits"] = np.concatenate([r.logits for r in results])
        arrays[f"{bundle.name}.paths"] = np.array([p for r in results for p in r.paths])
        if args.margins:
            arrays[f"{bundle.name}.margins"] = decision_margins(session, images, options)
        print(f"{bundle.name} on {session.backend.describe()}: {results[0].summary()}", flush=True)
    arrays["meta"] = np.array(json.dumps({"machine": platform.machine(), "backend": args.backend,
                                          "versions": _versions(), "batch": args.batch, "scale": SCALE}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)


def _runs_on(bundle: Path, backend: str) -> bool:
    if not (bundle / "manifest.json").is_file():  # an export still staging
        return False
    manifest = json.loads((bundle / "manifest.json").read_text())
    return TARGETS[manifest["target"]].backend == backend


def decision_margins(session: runtime.Session, images: np.ndarray, options: dict) -> np.ndarray:
    """Per image, the smallest distance of any decision its dispatch made to the point where it flips.

    Each image runs alone, every graph call seen through the session's hook:
    a selector that scores paths (no block walk) decides by its best score
    over the runner-up; one that scores blocks, by keep-probabilities against
    0.5; a graph that emits a gate logit beside its features, by that logit
    against 0. A bundle with no such decision has margin inf.
    """
    dispatch = session.manifest.dispatch
    roles, scores_blocks = dispatch.graph_roles(), dispatch.block_walk() is not None
    margins = np.full(len(images), np.inf)
    for index, image in enumerate(images):
        seen: list[float] = []

        def record(name, inputs, call):
            outputs = call(inputs)
            if roles.get(name) == "selector":
                scores = np.asarray(outputs[0], dtype=np.float64).ravel()
                seen.append(np.abs(scores - 0.5).min() if scores_blocks else np.subtract(*np.sort(scores)[-1:-3:-1]))
            elif roles.get(name) in ("stem", "block", "skip") and len(outputs) == 2:
                seen.append(float(np.abs(outputs[1]).min()))
            return outputs

        with session.hooked(record):
            session.run(image[None], **options)
        margins[index] = min(seen, default=np.inf)
    return margins


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("numpy", "onnxruntime", "executorch", "torch", "adaptive-edge"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


# ------------------------------------------------------------------ report (numpy)

def report(args: argparse.Namespace) -> None:
    labels = np.load(args.work / "labels.npy")
    x86, arm = _load_runs(args.x86), _load_runs(args.arm)
    rows = [compare(name, x86[name], arm[name], labels) for name in sorted(arm) if name in x86]
    if not rows:
        raise SystemExit(f"no bundle ran on both sides: x86 {sorted(x86)}, ARM {sorted(arm)}")
    meta = {"x86": [_meta(p) for p in args.x86], "arm": [_meta(p) for p in args.arm]}
    command = args.command or shlex.join(["python", "scripts/arm_compare.py", *sys.argv[1:]])
    payload = {"command": command, "notes": args.note, "images": sorted({r.images for r in rows}), "goals": GOALS, "scale": SCALE,
               "runs": meta, "rows": [asdict(r) | {"top1_pp": r.top1_pp} for r in rows]}
    text = format_report(payload, rows)
    atomic_write(args.out.with_suffix(".json"), lambda path: path.write_text(json.dumps(payload, indent=2) + "\n"))
    atomic_write(args.out.with_suffix(".md"), lambda path: path.write_text(text))
    print(text)


def _load_runs(files: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """bundle name -> {"logits", "paths", "margins"}, over the given run files."""
    runs: dict[str, dict[str, np.ndarray]] = {}
    for file in files:
        with np.load(file) as data:
            for key in data.files:
                if key != "meta":
                    bundle, field = key.rsplit(".", 1)
                    runs.setdefault(bundle, {})[field] = data[key]
    return runs


def _meta(file: Path) -> dict:
    with np.load(file) as data:
        return json.loads(str(data["meta"]))


def compare(name: str, x86: dict[str, np.ndarray], arm: dict[str, np.ndarray], labels: np.ndarray) -> Comparison:
    """One bundle's per-image agreement, judged against its precision's goals, over the images ARM ran (the
    first ones, when it ran fewer than x86)."""
    family, target, precision = name.rsplit("-", 2)
    count = len(arm["paths"])
    x86, labels = {key: value[:count] for key, value in x86.items()}, labels[:count]
    same = x86["paths"] == arm["paths"]
    delta = np.abs(x86["logits"] - arm["logits"])[same]
    flipped = np.flatnonzero(~same)
    widest = float(x86["margins"][flipped].max()) if len(flipped) else 0.0
    row = dict(
        bundle=f"{family}-{precision}", backend=TARGETS[target].backend, precision=precision, images=len(labels),
        same_path=float(same.mean()), max_logit_delta=float(delta.max()) if delta.size else float("nan"),
        top1_x86=float((x86["logits"].argmax(1) == labels).mean()),
        top1_arm=float((arm["logits"].argmax(1) == labels).mean()),
        same_top1=float((x86["logits"].argmax(1) == arm["logits"].argmax(1)).mean()), flips=len(flipped),
        flip_margins=[float(m) for m in x86["margins"][flipped]],
        close_calls=int((x86["margins"] <= widest).sum()) if len(flipped) else 0,
        closest_margin=float(x86["margins"].min()), verdict="",
    )
    return Comparison(**row | {"verdict": _verdict(Comparison(**row))})


def _verdict(row: Comparison) -> str:
    goal = GOALS[row.precision]
    held = row.same_path >= goal["same_path"]
    if "max_logit_delta" in goal:
        held &= row.max_logit_delta <= goal["max_logit_delta"] and abs(row.top1_pp) <= goal["top1_pp"]
    return "held" if held else "MISS"


def format_report(payload: dict, rows: list[Comparison]) -> str:
    arm_versions, x86_versions = (
        "; ".join(dict.fromkeys(f"{m['backend']}: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
                                for m in payload["runs"][side]))
        for side in ("arm", "x86"))
    g = GOALS
    lines = [
        "# The device runtime on ARM (emulated aarch64) against x86: decisions, logits, top-1",
        "",
        f"Command: `{payload['command']}`  ",
        f"ARM: {payload['runs']['arm'][0]['machine']}, {arm_versions}.  ",
        f"x86: {payload['runs']['x86'][0]['machine']}, {x86_versions}.  ",
        f"{' or '.join(map(str, payload['images']))} CIFAR-10 test images per bundle (the first of "
        "trainer.data.raw_images' seeded order, as the benchmarks take them), "
        f"batches of {payload['runs']['arm'][0]['batch']} through `Session.run`, one thread; URNet at S = "
        f"{payload['scale']}. Same bundles on both sides (exported once on x86, fp32 and int8 calibrated on "
        f"CIFAR-10 {CALIBRATION}). No timings: under emulation they mean nothing.",
        *[f"{note}  " for note in payload["notes"]],
        "",
        f"Goals: fp32: same path ≥ {g['fp32']['same_path']:.1%}, |Δlogit| ≤ {g['fp32']['max_logit_delta']:g} where "
        f"the path agrees, top-1 within {g['fp32']['top1_pp']} pp; int8: same path ≥ {g['int8']['same_path']:.0%}, "
        "top-1 difference reported. Margin: how far the image's closest dispatch decision was from flipping "
        "(selector's best score minus the runner-up; keep-probability minus 0.5; gate logit minus 0).",
        "",
        "| bundle | backend | images | same path | max abs Δlogit (same path) | top-1 x86 | top-1 ARM | Δ top-1 | same class "
        "| flips: x86 margin | images as close | closest x86 margin | goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        margins = ", ".join(f"{m:.2g}" for m in r.flip_margins) or "none"
        verdict = "held" if r.verdict == "held" else "**MISS**"
        lines.append(
            f"| {r.bundle} | {r.backend} | {r.images} | {r.same_path:.1%} | {r.max_logit_delta:.1e} | {r.top1_x86:.2%} | "
            f"{r.top1_arm:.2%} | {r.top1_pp:+.2f} pp | {r.same_top1:.1%} | {margins} | "
            f"{r.close_calls if r.flips else '-'} | {r.closest_margin:.1e} | {verdict} |")
    flips = [r for r in rows if r.flips]
    lines += ["", "Images as close: test images whose x86 margin is no wider than the widest flipped one; a tie "
              "margin of that width would have to treat them all as ties."]
    if flips:
        widest = max(max(r.flip_margins) for r in flips)
        lines.append(f"Every flip came at an x86 margin ≤ {widest:.2g}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
