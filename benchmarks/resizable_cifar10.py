"""Evidence for Resizable networks on real CIFAR-10, at a CPU session's budget.

python -m benchmarks.resizable_cifar10 [--data-root ../shared/data/cifar10] [--subset 2500] [--test-subset 2000] [--epochs 6]

1. Table 1 at small scale: every sub-network of one fair-sampling ResNet-20
   against configurations trained alone, at equal epochs.
2. Table 5's ablation: Resizable-Aug with and without BN calibration, and the
   supernet's sub-networks with and without it.
3. The lookup table with latency measured by `python -m runtime.profile` on
   host-cpu, onnxruntime and ExecuTorch, and what it picks under 3 budgets.
4. The ResizeLearner against the best single configuration at its mean MACs.
Writes benchmarks/results/resizable_cifar10.{md,json}. Finished trainings are
reused from --out, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.rigs import HOST_TARGETS
from runtime.format.lookup_table import LOOKUP_TABLE_FILE, LookupTable, write_table
from runtime.profile.compare import Measured, read_measurement
from runtime.serving.costs import BudgetError
from trainer.checkpoint import read_config
from trainer.families.resizable import configuration_name
from trainer.loop import Phase
from trainer.recipes import get_recipe
from trainer.resizable_nas import merge_profile, query, table_from_checkpoint
from trainer.train import train

RESULTS = Path(__file__).resolve().parent / "results"
ALONE = ((1.0, 1.0, 1.0), (0.75, 0.75, 0.75), (0.5, 0.5, 0.5))
FULL = (1.0, 1.0, 1.0)


def recipe_for(name: str, epochs: dict[str, int], *, target_lr: float = 0.1, **options):
    """The CIFAR recipe with a CPU-sized number of epochs per phase."""
    base = get_recipe("resizable-cifar10-resnet20")
    phases = {
        "supernet": dataclasses.replace(base.phases["supernet"], epochs=epochs.get("supernet", 0)),
        "target": Phase(epochs=epochs.get("target", 0), lr=target_lr),
        "learner": dataclasses.replace(base.phases["learner"], epochs=epochs.get("learner", 0)),
    }
    return dataclasses.replace(base, name=name, phases=phases, options=dataclasses.replace(base.options, **options))


def trained(recipe, out: Path, args) -> dict:
    if (out / "config.json").is_file():
        return read_config(out)
    return train(recipe, out, data_root=args.data_root, subset=args.subset, test_subset=args.test_subset)


def run(command: list[str]) -> None:
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


@contextlib.contextmanager
def timed(walls: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of what runs inside as walls[key]."""
    tic = time.perf_counter()
    yield
    walls[key] = time.perf_counter() - tic


def profiled(checkpoint: Path, target: str, bundle: Path, report: Path, runs: int, *export_options: str) -> Measured:
    """`checkpoint` exported for `target` and measured on host-cpu by `python -m runtime.profile`: its report, kept
    (and reused) at `report`."""
    if not report.is_file():
        run([sys.executable, "-m", "exporter", "--checkpoint", str(checkpoint), "--target", target,
             "--out", str(bundle), *export_options, "--force"])
        run([sys.executable, "-m", "runtime.profile", "--bundle", str(bundle), "--device", "host-cpu",
             "--runs", str(runs), "--out", str(report)])
    return read_measurement(report)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    parser.add_argument("--subset", type=int, default=2500, help="training images (a fixed random subset)")
    parser.add_argument("--test-subset", type=int, default=2000, help="test images (a fixed random subset)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--learner-epochs", type=int, default=6)
    parser.add_argument("--runs", type=int, default=50, help="profile rounds per path")
    parser.add_argument("--out", type=Path, default=Path("runs/resizable_cifar10"))
    parser.add_argument("--fair-gradients", choices=("sum", "mean"), default="sum",
                        help="sum: Algorithm 1 (default); mean: our deviation, dividing by len(L)")
    parser.add_argument("--name", default="resizable_cifar10", help="results file name in benchmarks/results")
    return parser


def main() -> int:
    args = arguments().parse_args()
    if not (args.data_root / "train").is_dir():
        print(f"no CIFAR-10 at {args.data_root}; nothing to measure", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "benchmarks.resizable_cifar10", *sys.argv[1:]])
    started = time.perf_counter()
    result, walls = {"command": command}, {}
    supernet = args.out / "supernet"
    with timed(walls, "supernet"):  # 1. the supernet (fair sampling), then the ResizeLearner on the same subset
        config = trained(
            recipe_for("resizable-cifar10-resnet20", {"supernet": args.epochs, "learner": args.learner_epochs},
                       learner_images=args.subset, fair_gradients=args.fair_gradients),
            supernet, args,
        )
    rows = config["metrics"]["configurations"]
    alone = trained_alone(args, walls)
    result["table1"] = {
        name: {"resizable": rows[name]["accuracy"], "alone": alone[name]["accuracy"],
               "alone_calibrated": alone[name]["accuracy_calibrated"], "macs": rows[name]["mean_macs"],
               "gain": rows[name]["accuracy"] - alone[name]["accuracy"]}
        for name in alone
    }
    with timed(walls, "aug"):
        result["table5"] = table5(args, rows, alone)
    with timed(walls, "table latency"):
        table = lookup_table(args, supernet)
    keys = table.latency_keys()
    result["table"] = [
        {"name": e.name, "macs": e.macs, "accuracy": e.accuracy, "accuracy_uncalibrated": e.accuracy_uncalibrated,
         **{f"ms {k}": e.latency_ms[k] for k in keys}}
        for e in table.configurations
    ]
    result["picks"] = picks(table, next(k for k in keys if k.endswith("onnxruntime")))
    with timed(walls, "learner"):
        table, result["learner"] = learner(args, supernet, table, config["metrics"]["model"])
    result["wall_time_s"] = {k: round(v, 1) for k, v in walls.items()} | {"total": round(time.perf_counter() - started, 1)}
    result["setup"] = {"subset": args.subset, "epochs": args.epochs, "fair_gradients": args.fair_gradients,
                       "learner_epochs": args.learner_epochs,
                       "test_images": config["metrics"]["images"], "calibration_images": table.calibration_images}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(report_markdown(result, keys))
    print((RESULTS / f"{args.name}.md").read_text())
    return 0


def trained_alone(args: argparse.Namespace, walls: dict[str, float]) -> dict[str, dict]:
    """Table 1's baselines: each configuration of ALONE trained alone, at the supernet's epochs."""
    alone = {}
    for configuration in ALONE:
        name = configuration_name(configuration)
        with timed(walls, f"alone {name}"):
            alone_config = trained(
                recipe_for(f"alone-{name}", {"target": args.epochs}, target=configuration, configurations=(configuration,)),
                args.out / f"alone-{name}", args,
            )
        own = alone_config["metrics"]["configurations"][name]
        alone[name] = {"accuracy": own["accuracy_uncalibrated"], "accuracy_calibrated": own["accuracy"],
                       "macs": own["mean_macs"]}
    return alone


def table5(args: argparse.Namespace, rows: dict, alone: dict) -> dict:
    """2. Resizable-Aug: fair sampling for 3/4 of the baseline's epochs, then the target alone."""
    switch = round(args.epochs * 0.75)
    aug = trained(
        recipe_for("resizable-aug", {"supernet": switch, "target": args.epochs - switch}, target_lr=0.01,
                   target=FULL, configurations=(FULL,), fair_gradients=args.fair_gradients),
        args.out / "aug", args,
    )
    aug_row = aug["metrics"]["configurations"][configuration_name(FULL)]
    return {
        "baseline (full, alone)": alone[configuration_name(FULL)]["accuracy"],
        "Resizable-Aug without BN calibration": aug_row["accuracy_uncalibrated"],
        "Resizable-Aug with BN calibration": aug_row["accuracy"],
        "switch_epoch": switch,
        "supernet sub-networks, mean gain of calibration": sum(
            r["accuracy"] - r["accuracy_uncalibrated"] for r in rows.values()) / len(rows),
    }


def lookup_table(args: argparse.Namespace, supernet: Path) -> LookupTable:
    """3. The supernet's lookup table, latency measured through runtime.profile on every host target."""
    table = table_from_checkpoint(supernet)
    write_table(supernet / LOOKUP_TABLE_FILE, table)
    for target in HOST_TARGETS:
        measured = profiled(supernet, target, args.out / f"all-{target}", args.out / f"profile-all-{target}.json",
                            args.runs, "--configurations", "all", "--no-selector")
        table = merge_profile(table, measured)
    write_table(supernet / LOOKUP_TABLE_FILE, table)
    return table


def picks(table: LookupTable, key: str) -> list[dict]:
    """What `query` picks at a quarter, half and three quarters of the latency range on `key`, then of the MACs."""
    latencies = sorted(e.latency_ms[key] for e in table.configurations)
    macs = sorted(e.macs for e in table.configurations)
    chosen = []
    for share in (0.25, 0.5, 0.75):
        budget = latencies[0] + share * (latencies[-1] - latencies[0])
        chosen.append((f"{budget:.3f} ms on {key}", query(table, budget_ms=budget, key=key)))
    for share in (0.25, 0.5, 0.75):
        budget = macs[0] + share * (macs[-1] - macs[0])
        chosen.append((f"{budget / 1e6:.2f} MMACs", query(table, budget_macs=budget)))
    return [{"budget": budget, "pick": entry.name, "accuracy": entry.accuracy, "macs": entry.macs,
             "ms": entry.latency_ms[key]} for budget, entry in chosen]


def learner(args: argparse.Namespace, supernet: Path, table: LookupTable, metrics: dict) -> tuple[LookupTable, dict]:
    """4. The ResizeLearner: eager accuracy and MACs on the test split, its own cost, and the best single
    configuration within its mean MACs. Returns the table with the learner's latency, and the figures."""
    measured = profiled(supernet, "onnx", args.out / "learner-onnx", args.out / "profile-learner-onnx.json", args.runs)
    table = merge_profile(table, measured)
    write_table(supernet / LOOKUP_TABLE_FILE, table)
    try:
        single = query(table, budget_macs=metrics["mean_macs"])
        single_row = {"name": single.name, "accuracy": single.accuracy, "macs": single.macs}
    except BudgetError as error:
        single_row = {"name": None, "note": str(error)}
    return table, {
        "accuracy": metrics["accuracy"], "mean_macs": metrics["mean_macs"], "learner_macs": metrics["learner_macs"],
        "learner_ms": table.learner_latency_ms, "histogram": metrics["histogram"],
        "best_single_within_mean_macs": single_row,
        "best_overall": max(({"name": e.name, "accuracy": e.accuracy, "macs": e.macs} for e in table.configurations),
                            key=lambda r: r["accuracy"]),
    }


def report_markdown(r: dict, keys: list[str]) -> str:
    s = r["setup"]
    lines = [
        "# Resizable networks on real CIFAR-10 (ResNet-20, CPU budget)", "",
        f"Command: `{r['command']}`  ",
        f"Wall time: {r['wall_time_s']['total'] / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in r['wall_time_s'].items() if k != 'total')} min)", "",
        f"Training: a fixed {s['subset']}-image subset of the training split, {s['epochs']} epochs for every network "
        f"(the paper: ImageNet, 200+ epochs). Test: a fixed random subset of {s['test_images']} test images. "
        f"BN calibration: {s['calibration_images']} training images per configuration. "
        f"Fair sampling's gradients: {s['fair_gradients']} over the len(L) sub-networks (Algorithm 1: sum). "
        "MACs: conv + linear multiply-accumulates per image.", "",
        "## 1. Sub-networks against the same configuration trained alone (Table 1)", "",
        "| configuration | MMACs | resizable (calibrated) | alone | alone, calibrated | gain |", "|---|---|---|---|---|---|",
    ]
    for name, row in r["table1"].items():
        lines.append(f"| {name} | {row['macs'] / 1e6:.2f} | {row['resizable']:.2%} | {row['alone']:.2%} | "
                     f"{row['alone_calibrated']:.2%} | {row['gain']:+.2%} |")
    t5 = r["table5"]
    lines += [
        "", "## 2. BN calibration (Table 5)", "",
        "| model | top-1 |", "|---|---|",
        *(f"| {k} | {v:.2%} |" for k, v in t5.items() if k not in ("switch_epoch", "supernet sub-networks, mean gain of calibration")),
        "", f"Resizable-Aug switches to the full configuration alone at epoch {t5['switch_epoch']} of {s['epochs']}. "
        f"Over the supernet's 27 sub-networks, calibration changes top-1 by {t5['supernet sub-networks, mean gain of calibration']:+.2%} on average.",
        "", "## 3. The lookup table (latency: median ms per image at batch 1 through Session.run, host-cpu)", "",
        "| configuration | MMACs | top-1 | uncalibrated | " + " | ".join(keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for row in sorted(r["table"], key=lambda row: -row["macs"]):
        lines.append(f"| {row['name']} | {row['macs'] / 1e6:.2f} | {row['accuracy']:.2%} | {row['accuracy_uncalibrated']:.2%} | "
                     + " | ".join(f"{row[f'ms {k}']:.3f}" for k in keys) + " |")
    lines += ["", "Picks (`trainer.resizable_nas.query`, the most accurate configuration within budget):", "",
              "| budget | pick | top-1 | MMACs | ms (onnxruntime) |", "|---|---|---|---|---|"]
    for p in r["picks"]:
        lines.append(f"| {p['budget']} | {p['pick']} | {p['accuracy']:.2%} | {p['macs'] / 1e6:.2f} | {p['ms']:.3f} |")
    le = r["learner"]
    single = le["best_single_within_mean_macs"]
    lines += [
        "", "## 4. The ResizeLearner (Resizable-Adapt) against the best single configuration", "",
        "| | top-1 | mean MMACs (learner included) |", "|---|---|---|",
        f"| ResizeLearner, per image | {le['accuracy']:.2%} | {le['mean_macs'] / 1e6:.2f} |",
        (f"| best single configuration within that mean ({single['name']}) | {single['accuracy']:.2%} | {single['macs'] / 1e6:.2f} |"
         if single.get("name") else f"| no single configuration within that mean | {single['note']} | |"),
        f"| best single configuration overall ({le['best_overall']['name']}) | {le['best_overall']['accuracy']:.2%} | "
        f"{le['best_overall']['macs'] / 1e6:.2f} |",
        "", f"The learner's own cost: {le['learner_macs'] / 1e6:.2f} MMACs (stem + 3 convs), "
        + ", ".join(f"{v:.3f} ms on {k}" for k, v in le["learner_ms"].items()) + ".",
        f"Configurations it chose on the test split: {le['histogram']}.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
