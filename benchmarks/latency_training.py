"""Evidence that training against a device's latency beats training against MACs, on that device.

python -m benchmarks.latency_training [--families blockdrop drnet urnet] [--subset N] [--epoch-scale F]
    [--images N] [--rounds N]

For each family, two runs from the committed pretrained ResNet-20 that differ
only in the cost term: the papers' MACs, and host-cpu's measured ms on
onnxruntime (`python -m trainer --cost latency`, trainer/device_costs.py), at
the same share (DRNet's alpha, URNet's S, BlockDrop's usage penalty). The latency table is measured first
on the recipe's untrained graphs (`python -m runtime.profile costs`). Both runs
are exported for onnx on host-cpu and measured in one interleaved run per family
through `Session.run`, one test image per call (a new one each call), beside the
static full model of each bundle; top-1 on the same test images through the bundle.

Goals (benchmarks/results/latency_training.md): against what the MACs-trained
model reaches (its operating points, its static model, and mixes of two), the
latency-trained model is at least 10% faster at equal top-1 (within 0.3 pp) or
at least 0.5 pp better at equal latency; URNet's latency-trained S = 0.5 runs
within 10% of half the static model's latency.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.evidence import RESULTS, Evidence, Run, arguments, claim, run_section, summary, write_results
from benchmarks.rigs import CALLS_PER_ROUND, FLOOR, FORCED, image_stream, machine, timed_points
from runtime.format.devices import get_device
from runtime.format.block_names import CONDITIONAL_GRAPH
from runtime.format.latency_table import read_latency_table
from runtime.profile.timing import measure
from runtime.session import load
from trainer.data import raw_images
from trainer.device_costs import read_device_costs

TARGET, DEVICE = "onnx", "host-cpu"
SAME_TOP1, FASTER, BETTER = 0.003, 0.10, 0.005  # the goals: within 0.3 pp, 10% faster; or 0.5 pp better
URNET_SCALE, URNET_TOLERANCE = 0.5, 0.10
SCALES = (0.2, 0.35, 0.5, 0.7, 1.0)  # a steered bundle's S, URNET_SCALE among them
LATENCY = "cost: host-cpu/onnxruntime milliseconds from its latency table (paper: MACs)"
DRNET_SETTING = ("multi-resolution pretraining 2 epochs at 0.01 from the pretrained {backbone}, finetuning 4 epochs "
                 "(paper: 70 and 100 epochs from scratch)", "alpha 0.6 of the full resolution's cost")
URNET_SETTING = ("gates 100 epochs, joint 3 epochs from the pretrained {backbone} (paper: 100 and 400)",)
BLOCKDROP_SETTING = ("curriculum 3 epochs, finetuning 3 epochs at Adam 1e-3 from the pretrained {backbone} "
                     "(paper: 5000 and 2000 at 1e-4, then 1e-5)",
                     "Table 1's baselines are reported on the pretrained ResNet, not fine-tuned (paper: fine-tuned)")


@dataclass(frozen=True)
class Arms:
    """A family's two runs: the same recipe, epochs and options, the papers' MACs cost and the device's ms.
    `control_flows`: a gated family's ways of running its blocks (`--control-flow`), each exported and measured;
    the arms' own rows are the form their cost table timed, the others are measured beside them."""

    recipe: str
    runs: tuple[Run, Run]
    control_flows: tuple[str, ...] = ()


def arms(name: str, recipe: str, epochs: dict, setting: tuple[str, ...], *, control_flows: tuple[str, ...] = (),
         **run) -> Arms:
    runs = (Run(f"{name}-macs", recipe, epochs, deviations=setting, **run),
            Run(f"{name}-latency", recipe, epochs, deviations=(*setting, LATENCY), **run))
    return Arms(recipe, runs, control_flows)


def costed_control_flow(table: Path) -> str:
    """The control flow of the bundle `table` timed (`costs` exports with `auto`): a latency-trained model is
    measured as it was costed."""
    return "graph" if CONDITIONAL_GRAPH in read_latency_table(table).graphs else "calls"


FAMILIES = {
    "blockdrop": arms("blockdrop", "blockdrop-cifar10-resnet20", {"curriculum": 3, "finetune": 3}, BLOCKDROP_SETTING,
                      lr={"finetune": 1e-3}, options={"baseline_finetune_epochs": 0}),
    "drnet": arms("drnet", "drnet-cifar10", {"pretrain": 2, "finetune": 4}, DRNET_SETTING, lr={"pretrain": 0.01},
                  options={"macs_target": 0.6}),
    "urnet": arms("urnet", "urnet-cifar10-resnet20", {"gates": 100, "joint": 3}, URNET_SETTING,
                  control_flows=("calls", "graph")),
}


def cost_table(recipe: str, evidence: Evidence, data_root: Path) -> Path:
    """The device's latency table for `recipe`'s untrained graphs, measured once per backbone."""
    path = evidence.runs / f"costs-{recipe}.{DEVICE}.{TARGET}.json"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "runtime.profile", "costs", "--recipe", recipe, "--target", TARGET,
                        "--device", DEVICE, "--init", str(evidence.init), "--data-root", str(data_root),
                        "--out", str(path)], check=True)
    return path


def bundle_of(checkpoint: Path, flags: tuple[str, ...] = (), variant: str = "") -> Path:
    bundle = checkpoint.parent / f"{checkpoint.name}-{TARGET}{'-' + variant if variant else ''}"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "exporter", "--checkpoint", str(checkpoint), "--target", TARGET,
                        "--device", DEVICE, "--out", str(bundle), "--force", "--accuracy-images", "0", *flags],
                       check=True)
    return bundle


def measured_points(bundles: dict[str, Path], images: np.ndarray, labels: np.ndarray, rounds: int) -> dict:
    """Each bundle's operating points (its one dynamic point, or URNet's S sweep), its forced paths and its static
    model: top-1 on `images`, and the mean latency per image over a stream of single-image calls (`image_stream`),
    every point timed in one interleaved measurement."""
    device = get_device(DEVICE)
    sessions = {name: load(bundle, "onnxruntime", device=device) for name, bundle in bundles.items()}
    calls, top1 = {}, {}
    for name, session in sessions.items():
        # The forced paths are points the MACs-trained model reaches too, so that a selector that sends every image
        # one way wins nothing; the floor is reported, but no part of any reach.
        for point, extra in timed_points(session, SCALES).items():
            result = session.run(images, **extra)
            top1[name, point] = float((result.logits.argmax(1) == labels).mean())
            calls[name, point] = image_stream(session, images, **extra)
    timed = measure(calls, runs=rounds, warmup=3)
    return {name: {point: {"top1": top1[name, point], "ms": timed[name, point].median_ms / CALLS_PER_ROUND,
                           "mad_ms": timed[name, point].mad_ms / CALLS_PER_ROUND}
                   for (n, point) in calls if n == name} for name in sessions}


def mixes(points: list[dict]) -> list[tuple[float, float]]:
    """What a deployment can reach from `points` (top-1, ms): each point, and each mix of two, sending a share of
    the images to one and the rest to the other (linear in both)."""
    reach = [(p["top1"], p["ms"]) for p in points]
    for a, b in itertools.combinations(points, 2):
        reach += [(a["top1"] + w * (b["top1"] - a["top1"]), a["ms"] + w * (b["ms"] - a["ms"]))
                  for w in np.linspace(0, 1, 101)[1:-1]]
    return reach


def frontier_goal(macs: dict, latency: dict) -> tuple[bool, str]:
    """Whether a latency-trained point beats what the MACs-trained model reaches (its operating points, its forced
    paths, its static model, and mixes of two; not its floor, which no user asks for): >= 10% faster than the
    fastest of them at its top-1 (less 0.3 pp), or >= 0.5 pp better than the best of them at its latency. A point
    that is only faster at a lower top-1, or more accurate at a higher latency, beats nothing: the MACs-trained
    model may reach it too, by a mix with its static model."""
    reach = mixes([point for name, point in macs.items() if name != FLOOR])
    findings = []
    chosen = ((k, v) for k, v in latency.items() if k not in ("static", FLOOR) and not k.startswith(FORCED))
    for name, point in chosen:
        as_good = [ms for top1, ms in reach if top1 >= point["top1"] - SAME_TOP1]
        as_fast = [top1 for top1, ms in reach if ms <= point["ms"]]
        faster = min(as_good) / point["ms"] - 1 if as_good else None
        better = point["top1"] - max(as_fast) if as_fast else None
        holds = (faster is not None and faster >= FASTER) or (better is not None and better >= BETTER)
        findings.append((holds, faster or 0.0, f"latency-trained {name}: {point['top1']:.2%} at {point['ms']:.3f} ms; "
                         + (f"the MACs-trained model at that top-1: {min(as_good):.3f} ms ({faster:+.0%})"
                            if faster is not None else "no MACs-trained point or mix as accurate")
                         + (f"; at that latency: {max(as_fast):.2%} ({100 * better:+.1f} pp)" if better is not None
                            else "; no MACs-trained point or mix as fast")))
    if not findings:
        return False, "no points"
    holds, _, text = max(findings, key=lambda f: (f[0], f[1]))
    return holds, text


def plot(points: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({name.split("-")[0] for name in points})
    figure, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4), squeeze=False)
    for axis, family in zip(axes[0], families):
        for name, marker in ((f"{family}-macs", "o-"), (f"{family}-latency", "s-")):
            if name not in points:
                continue
            chosen = (p for p in points[name].items() if p[0] not in ("static", FLOOR) and not p[0].startswith(FORCED))
            rows = sorted(chosen, key=lambda p: p[1]["ms"])
            axis.plot([r["ms"] for _, r in rows], [100 * r["top1"] for _, r in rows], marker,
                      label=f"trained against {name.split('-')[1]}")
            for label, r in rows:
                axis.annotate(label, (r["ms"], 100 * r["top1"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
            static = points[name]["static"]
            axis.plot([static["ms"]], [100 * static["top1"]], "k*", markersize=10)
        axis.set_title(f"{family}: top-1 against host-cpu/onnxruntime latency (* static)")
        axis.set_xlabel("ms per image, batch 1, through Session.run")
        axis.set_ylabel("top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def report(command: str, results: dict, points: dict, claims: list[dict], figure: Path | None,
           costed: dict[str, str]) -> str:
    host = machine()
    lines = [
        "# Training for the device: latency-trained against MACs-trained",
        "",
        f"Command: `{command}`. Host: {host['machine']}, {host['cpus']} CPUs; {host['versions']}.",
        "",
        "Both runs of a family start from the same pretrained ResNet-20, with the same seed, epochs and share; they "
        "differ only in the cost term. Latency: the mean per image, as the median over interleaved rounds of "
        f"{CALLS_PER_ROUND} `Session.run` calls, one new test image per call; a family's bundles and their static full "
        "models timed in one run of their own.",
        *(f"{family}'s arms are measured in the form their cost table timed, `--control-flow {flow}`; the rows "
          f"named '{family}-..., <form>' are its other forms, measured beside them." for family, flow in costed.items()),
        "",
        "| run | point | top-1 | ms per image | static ms | speedup vs static |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in points.items():
        static = rows["static"]
        for point, row in rows.items():
            if point != "static":
                lines.append(f"| {name} | {point} | {row['top1']:.2%} | {row['ms']:.3f} | {static['ms']:.3f} | "
                             f"{static['ms'] / row['ms']:.2f}x |")
    lines += ["", "## Goals", ""]
    lines += [f"- **{c['verdict']}**: {c['claim']} ({c['evidence']})" for c in claims]
    if figure:
        lines += ["", f"![frontier]({figure.name})"]
    for name, result in results.items():
        lines += run_section(name, result)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--images", type=int, default=1000, help="test images for top-1 and latency")
    parser.add_argument("--rounds", type=int, default=100,
                        help=f"interleaved timing rounds, {CALLS_PER_ROUND} images each (default: %(default)s)")
    args = parser.parse_args()
    if not (args.data_root / "train").is_dir():
        parser.error(f"no CIFAR-10 at {args.data_root}")
    command = shlex.join(["python", "-m", "benchmarks.latency_training", *sys.argv[1:]])
    evidence = Evidence.from_arguments(args, "latency_training")
    evidence.runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results, bundles, costed = {}, {}, {}
    for family in args.families:
        family_arms = FAMILIES[family]
        table = cost_table(family_arms.recipe, evidence, args.data_root)
        if family_arms.control_flows:
            costed[family] = costed_control_flow(table)
        for run in family_arms.runs:
            costs = read_device_costs(table, family_arms.recipe) if run.name.endswith("-latency") else None
            recipe = run.recipe_for(evidence.depth, args.epoch_scale)
            config, how = evidence.trained(recipe, run, data_root=args.data_root, subset=args.subset, costs=costs)
            results[run.name] = summary(run, config, how, command)
            if not family_arms.control_flows:
                bundles[run.name] = bundle_of(evidence.runs / run.name)
            for flow in family_arms.control_flows:
                name = run.name if flow == costed[family] else f"{run.name}, {flow}"
                bundles[name] = bundle_of(evidence.runs / run.name, ("--control-flow", flow), flow)
    images, labels = raw_images("cifar10", "test", data_root=args.data_root, limit=args.images)
    # A family at a time: interleaved with many other bundles, a path of many small graph calls pays cache misses
    # that a device serving one bundle does not (URNet's floor: 0.64 of static alone, 0.82 among 8 bundles).
    points = {}
    for family in args.families:
        family_bundles = {name: bundle for name, bundle in bundles.items() if name.startswith(f"{family}-")}
        points |= measured_points(family_bundles, images, np.asarray(labels), args.rounds)
    claims = []
    for family in args.families:
        macs, latency = points.get(f"{family}-macs"), points.get(f"{family}-latency")
        holds, evidence_text = frontier_goal(macs, latency)
        claims.append(claim(f"{family}: the latency-trained model is >= 10% faster at equal top-1 or >= 0.5 pp better "
                            "at equal latency", holds, evidence_text))
        if family == "urnet":
            half = latency[f"S={URNET_SCALE}"]["ms"] / latency["static"]["ms"]
            claims.append(claim(f"urnet: latency-trained S = {URNET_SCALE} runs within {URNET_TOLERANCE:.0%} of half "
                                "the static model's latency", abs(half - URNET_SCALE) <= URNET_TOLERANCE * URNET_SCALE,
                                f"{half:.2f} of static (MACs-trained: "
                                f"{macs[f'S={URNET_SCALE}']['ms'] / macs['static']['ms']:.2f})"))
    stem = evidence.name
    figure = None
    try:
        figure = plot(points, RESULTS / f"{stem}.png")
    except ImportError:
        pass
    tables = {f: str(cost_table(FAMILIES[f].recipe, evidence, args.data_root)) for f in args.families}
    results["measured"] = {"points": points, "costed_control_flow": costed, "table": tables,
                           "wall_time_s": time.perf_counter() - started}
    write_results(stem, command, results, claims, report(command, {k: v for k, v in results.items() if k != "measured"},
                                                          points, claims, figure, costed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
