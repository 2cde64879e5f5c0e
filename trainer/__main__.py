"""python -m trainer --recipe NAME [--epochs N] [--out DIR] [--device cpu|cuda] [--data-root DIR] [--init WEIGHTS]
                    [--cost latency --costs TABLE]   (train the decisions against a device's ms, not MACs)
python -m trainer --resume DIR      (continue an interrupted run exactly where it was saved)
torchrun --nproc-per-node=8 [--nnodes=N ...] -m trainer --recipe NAME ...   (one process per GPU)"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from runtime.format.files import atomic_write
from trainer.device_costs import COSTS, read_device_costs
from trainer.distributed import ranks, start, stop
from trainer.evaluate import format_metrics
from trainer.families import get_family
from trainer.recipes import RECIPES, get_recipe
from trainer.resume import PREVIOUS_STATE_FILE, STATE_FILE
from trainer.train import train

RUN_FILE = "run.json"  # the command line of a run, so that --resume repeats it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train an input-adaptive CNN.")
    parser.add_argument("--recipe", help="recipe name, <family>-<dataset>[-<backbone>]; see --list-recipes")
    parser.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")
    parser.add_argument("--epochs", type=int, help="total epochs, shared among the recipe's phases")
    parser.add_argument("--out", type=Path, help="checkpoint directory (default: runs/<recipe>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where to train (default: %(default)s); on a CPU a recipe may fix its threads")
    parser.add_argument("--data-root", type=Path,
                        help="the dataset: CIFAR-10 as an ImageFolder tree or torchvision batches, or ImageNet as "
                        "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; digits ship with scikit-learn and need none")
    parser.add_argument("--subset", type=int, help="train on a fixed random subset of this many images")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the networks' initial weights and every random draw of training (default: 0)")
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS",
                        help="save the training state every STEPS steps, and at the end of each phase (default: %(default)s)")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS",
                        help="start from a plain backbone (.safetensors from a resnet-<dataset>-<depth> recipe, "
                        "e.g. benchmarks/weights/); the phases it stands in for are skipped")
    parser.add_argument("--compile", action="store_true", help="run the backbone through torch.compile")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="data-loading processes per GPU process (ImageNet; default: the cores, up to 8)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the interrupted run in DIR exactly")
    parser.add_argument("--cost", choices=sorted(COSTS), default="macs",
                        help="what the decisions are trained to save: " + "; ".join(f"{k}: {v}" for k, v in COSTS.items())
                        + " (default: %(default)s, the papers'; latency is a deviation the checkpoint records)")
    parser.add_argument("--costs", type=Path, metavar="TABLE",
                        help="--cost latency: the device's latency table for this recipe, from python -m runtime.profile "
                        "costs --recipe R --target T --device D --out TABLE")
    args = parser.parse_args(argv)
    if args.resume is not None:
        saved = args.resume / RUN_FILE
        if not saved.is_file():
            parser.error(f"--resume {args.resume}: no {RUN_FILE}; was it started by `python -m trainer --recipe ...`?")
        args = argparse.Namespace(**{**vars(args), **json.loads(saved.read_text()), "out": args.resume, "resume": True})

    if args.list_recipes:
        for recipe in RECIPES.values():
            epochs = "+".join(f"{p.epochs}" for p in recipe.phases.values())
            kind = recipe.family or "backbone"
            print(f"{recipe.name:32} {kind:9} {recipe.architecture:22} epochs {epochs:10} {recipe.description}")
        return 0
    if not args.recipe:
        parser.error("--recipe is required (see --list-recipes)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    try:
        recipe = get_recipe(args.recipe)
        if args.init is not None and recipe.family is not None:  # before --epochs shares the epochs among phases
            recipe = recipe.without(get_family(recipe.family).init_skips)
        if args.epochs is not None:
            recipe = recipe.with_epochs(args.epochs)
    except ValueError as error:
        parser.error(str(error))
    if recipe.dataset != "digits" and args.data_root is None:
        parser.error(f"recipe {recipe.name} trains on {recipe.dataset}: pass --data-root DIR")
    if (args.cost == "latency") != (args.costs is not None):
        parser.error("--cost latency needs --costs TABLE, and --costs needs --cost latency")
    try:
        costs = read_device_costs(args.costs, recipe.name) if args.costs else None
    except ValueError as error:
        parser.error(str(error))
    if costs is not None and ranks().main:
        print(f"trainer: the decisions train against {costs.table.device}/{costs.table.backend} latency from "
              f"{args.costs}, not the paper's MACs", flush=True)

    out = Path(args.out or Path("runs") / recipe.name)
    place = start(args.device)
    if not args.resume and place.main:
        command = {key: getattr(args, key)
                   for key in ("recipe", "epochs", "device", "subset", "seed", "checkpoint_every", "compile", "workers")}
        command["cost"] = args.cost
        for key in ("data_root", "init", "costs"):
            command[key] = str(getattr(args, key)) if getattr(args, key) else None
        atomic_write(out / RUN_FILE, lambda path: Path(path).write_text(json.dumps(command, indent=2)))
    try:
        result = train(
            recipe, out, device=args.device, data_root=args.data_root, subset=args.subset, seed=args.seed,
            checkpoint_every=args.checkpoint_every, resume=bool(args.resume), init=args.init,
            command=command_line(args, out), torch_compile=args.compile, workers=args.workers, costs=costs,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = any((out / name).is_file() for name in (STATE_FILE, PREVIOUS_STATE_FILE))
        then = (f"its last save is kept: continue with `python -m trainer --resume {out}`" if saved
                else "nothing was saved yet (the first save closes the first epoch)")
        print(f"\ntrainer: interrupted; {then}", file=sys.stderr)
        return 130
    finally:
        stop()
    if not place.main:
        return 0
    if recipe.family is None:
        print(f"{recipe.name} -> {out}: top-1 {result['test_accuracy']:.2%} on {result['test_images']} test images")
    else:
        print(format_metrics(f"{recipe.name} -> {out}", result["metrics"]))
    return 0


def command_line(args: argparse.Namespace, out: Path) -> str:
    """The command that starts this run afresh: what a backbone's record says made it."""
    place = ranks()
    launcher = "python"
    if place.distributed:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", place.world_size))
        launcher = f"torchrun --nnodes={place.world_size // per_node} --nproc-per-node={per_node}"
    words = [f"{launcher} -m trainer", f"--recipe {args.recipe}", f"--out {out}", f"--seed {args.seed}"]
    for flag, value in (("--epochs", args.epochs), ("--subset", args.subset), ("--data-root", args.data_root),
                        ("--init", args.init), ("--workers", args.workers), ("--costs", args.costs)):
        if value is not None:
            words.append(f"{flag} {value}")
    if args.costs is not None:
        words.append("--cost latency")
    return " ".join(words + (["--compile"] if args.compile else []))


if __name__ == "__main__":
    sys.exit(main())
