"""python -m trainer --recipe NAME [--epochs N] [--out DIR] [--device cpu|cuda] [--data-root DIR]
python -m trainer --resume DIR      (continue an interrupted run exactly where it was saved)"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from trainer.evaluate import format_metrics
from runtime.files import atomic_write
from trainer.recipes import RECIPES, get_recipe
from trainer.train import train

RUN_FILE = "run.json"  # the command line of a run, so that --resume repeats it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train an input-adaptive CNN.")
    parser.add_argument("--recipe", help="recipe name, <family>-<dataset>[-<backbone>]; see --list-recipes")
    parser.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")
    parser.add_argument("--epochs", type=int, help="total epochs, shared among the recipe's phases")
    parser.add_argument("--out", type=Path, help="checkpoint directory (default: runs/<recipe>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", type=Path, help="CIFAR-10 as an ImageFolder tree or torchvision batches")
    parser.add_argument("--subset", type=int, help="train on a fixed random subset of this many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS",
                        help="save the training state every STEPS steps, and at the end of each phase (default: %(default)s)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the interrupted run in DIR exactly")
    args = parser.parse_args(argv)
    if args.resume is not None:
        saved = args.resume / RUN_FILE
        if not saved.is_file():
            parser.error(f"--resume {args.resume}: no {RUN_FILE}; was it started by `python -m trainer --recipe ...`?")
        args = argparse.Namespace(**{**vars(args), **json.loads(saved.read_text()), "out": args.resume, "resume": True})

    if args.list_recipes:
        for recipe in RECIPES.values():
            epochs = "+".join(f"{p.epochs}" for p in recipe.phases.values())
            print(f"{recipe.name:32} {recipe.family:9} {recipe.architecture:22} epochs {epochs:10} {recipe.description}")
        return 0
    if not args.recipe:
        parser.error("--recipe is required (see --list-recipes)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    try:
        recipe = get_recipe(args.recipe)
        if args.epochs is not None:
            recipe = recipe.with_epochs(args.epochs)
    except ValueError as error:
        parser.error(str(error))
    if recipe.dataset != "digits" and args.data_root is None:
        parser.error(f"recipe {recipe.name} trains on {recipe.dataset}: pass --data-root DIR")

    out = Path(args.out or Path("runs") / recipe.name)
    if not args.resume:
        command = {key: getattr(args, key) for key in ("recipe", "epochs", "device", "subset", "seed", "checkpoint_every")}
        command["data_root"] = str(args.data_root) if args.data_root else None
        atomic_write(out / RUN_FILE, lambda path: Path(path).write_text(json.dumps(command, indent=2)))
    try:
        config = train(
            recipe, out, device=args.device, data_root=args.data_root, subset=args.subset, seed=args.seed,
            checkpoint_every=args.checkpoint_every, resume=bool(args.resume),
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    print(format_metrics(f"{recipe.name} -> {out}", config["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
