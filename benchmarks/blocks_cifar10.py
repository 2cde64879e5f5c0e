"""Evidence for the block-dropping families on real CIFAR-10, at a CPU session's budget.

python benchmarks/blocks_cifar10.py [--data-root ../shared/data/cifar10] [--subset 10000] [--depth 32]

Trains BlockDrop and URNet on a fixed subset of the training split, evaluates
both on the full test split, checks the three claims of the block families'
issue, and writes benchmarks/results/blocks_cifar10.{md,json} plus figures.
MACs are conv+linear multiply-accumulates per image, policy/gates included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from trainer.evaluate import format_metrics
from trainer.plots import plot_metrics
from trainer.recipes import get_recipe
from trainer.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def budget(recipe_name: str, depth: int, epochs: dict[str, int], lr: dict[str, float] | None = None, scale: float = 1.0):
    recipe = get_recipe(recipe_name)
    phases = {
        name: dataclasses.replace(phase, epochs=max(1, round(epochs[name] * scale)), lr=(lr or {}).get(name, phase.lr))
        for name, phase in recipe.phases.items()
    }
    return dataclasses.replace(recipe, name=f"{recipe.family}-cifar10-resnet{depth}", depth=depth, phases=phases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/blocks_cifar10"))
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="scale every phase's epochs (smoke runs)")
    parser.add_argument("--families", nargs="+", default=["blockdrop", "urnet"],
                        help="rerun only these; the others' results are kept from the last run's JSON")
    parser.add_argument("--gamma", type=float, help="BlockDrop's penalty for a wrong prediction (recipe: 10)")
    args = parser.parse_args()
    if not (args.data_root / "train").is_dir():
        print(f"no CIFAR-10 at {args.data_root}; nothing to measure", file=sys.stderr)
        return 2
    command = shlex.join(["python", "benchmarks/blocks_cifar10.py", *sys.argv[1:]])
    runs = {
        "blockdrop": budget(
            "blockdrop-cifar10-resnet32", args.depth,
            {"pretrain": 15, "curriculum": (args.depth - 2) // 2, "finetune": 10},
            {"finetune": 1e-3}, args.epoch_scale,
        ),
        "urnet": budget(
            "urnet-cifar10-resnet110", args.depth, {"pretrain": 15, "gates": 8, "joint": 10}, {"gates": 1e-2},
            scale=args.epoch_scale,
        ),
    }
    if args.gamma is not None:
        recipe = runs["blockdrop"]
        runs["blockdrop"] = dataclasses.replace(recipe, options=dataclasses.replace(recipe.options, gamma=args.gamma))
    results = {}
    for family, recipe in runs.items():
        if family not in args.families:
            continue
        started = time.perf_counter()
        config = train(recipe, args.out / family, data_root=args.data_root, subset=args.subset)
        wall = time.perf_counter() - started
        figures = plot_metrics(config["metrics"], RESULTS / f"blocks_cifar10_{family}")
        results[family] = {
            "command": command,
            "recipe": recipe.name,
            "phases": {n: dataclasses.asdict(p) for n, p in recipe.phases.items()},
            "options": dataclasses.asdict(recipe.options),
            "wall_time_s": round(wall),
            "metrics": config["metrics"],
            "figures": [str(f.relative_to(RESULTS.parent.parent)) for f in figures],
        }
        print(format_metrics(recipe.name, config["metrics"]), flush=True)

    # Merged at the end, so that runs of different families can go on side by side.
    previous = RESULTS / "blocks_cifar10.json"
    results = {**(json.loads(previous.read_text())["results"] if previous.is_file() else {}), **results}
    claims = check_claims(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "blocks_cifar10.json").write_text(json.dumps({"command": command, "results": results, "claims": claims}, indent=2))
    (RESULTS / "blocks_cifar10.md").write_text(report(command, args, results, claims))
    for claim in claims:
        print(f"{'holds' if claim['holds'] else 'DOES NOT HOLD'}: {claim['claim']} ({claim['evidence']})")
    return 0


def check_claims(results: dict) -> list[dict]:
    claims = []
    points = {p["scale"]: p for p in results["urnet"]["metrics"]["operating_points"]}
    deviations = {s: points[s]["model"]["usage"] - s for s in (0.4, 0.6, 0.8, 1.0)}
    claims.append({
        "claim": "URNet follows S: mean block usage / N within +-0.1 of S for S in {0.4, 0.6, 0.8, 1.0}",
        "holds": all(abs(d) <= 0.1 for d in deviations.values()),
        "evidence": ", ".join(f"S={s}: usage {points[s]['model']['usage']:.3f}" for s in deviations),
    })
    bd = results["blockdrop"]["metrics"]
    model = bd["model"]["accuracy"]
    rivals = {n: r["accuracy"] for n, r in bd["baselines"].items() if n.startswith(("RandomK", "FirstK"))}
    claims.append({
        "claim": "BlockDrop's learned policy beats RandomK and FirstK in accuracy at the same K",
        "holds": all(model > a for a in rivals.values()),
        "evidence": f"BlockDrop {model:.2%} vs " + ", ".join(f"{n} {a:.2%}" for n, a in rivals.items()),
    })
    wins = {}
    for s in (0.4, 0.6):
        ours = points[s]["model"]["accuracy"]
        rand = points[s]["baselines"]
        wins[s] = (ours, {n: r["accuracy"] for n, r in rand.items()})
    claims.append({
        "claim": "URNet beats the random-drop baselines at S = 0.4 and 0.6",
        "holds": all(ours > a for ours, rand in wins.values() for a in rand.values()),
        "evidence": "; ".join(
            f"S={s}: URNet {ours:.2%} vs " + ", ".join(f"{n} {a:.2%}" for n, a in rand.items())
            for s, (ours, rand) in wins.items()
        ),
    })
    return claims


def report(command: str, args, results: dict, claims: list[dict]) -> str:
    lines = [
        "# Block-dropping families on real CIFAR-10 (CPU budget)",
        "",
        f"Command: `{command}`",
        "",
        (f"Data: real CIFAR-10 JPEGs (`{args.data_root}`), a fixed random subset of {args.subset} training images, "
        "evaluated on all 10,000 test images. Backbone: CIFAR ResNet-"
        f"{args.depth}. Machine: {torch.get_num_threads()} CPU threads, no GPU."),
        "MACs: conv+linear multiply-accumulates per image, policy network or gates included.",
        "",
        "## Claims",
        "",
    ]
    for claim in claims:
        lines.append(f"- **{'holds' if claim['holds'] else 'does not hold'}**: {claim['claim']}. {claim['evidence']}.")
    for family, result in results.items():
        phases = ", ".join(f"{n} {p['epochs']} epochs ({p['optimizer']}, lr {p['lr']:g})" for n, p in result["phases"].items())
        lines += [
            "",
            f"## {family}: {result['recipe']}",
            "",
            f"Command: `{result.get('command', command)}`. Phases: {phases}. Wall time {result['wall_time_s']} s.",
            "",
            "Options: " + ", ".join(f"{k}={v}" for k, v in result.get("options", {}).items()) + ".",
            "",
            "```",
            format_metrics(result["recipe"], result["metrics"]),
            "```",
            "",
            *[f"![{Path(f).stem}]({Path(f).relative_to('benchmarks/results')})" for f in result["figures"]],
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
