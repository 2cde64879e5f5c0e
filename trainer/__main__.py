"""python -m trainer --recipe NAME [--epochs N] [--out DIR] [--device cpu|cuda] [--data-root DIR]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trainer.evaluate import format_metrics
from trainer.recipes import RECIPES, get_recipe
from trainer.train import train


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
    args = parser.parse_args(argv)

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

    out = args.out or Path("runs") / recipe.name
    try:
        config = train(recipe, out, device=args.device, data_root=args.data_root, subset=args.subset, seed=args.seed)
    except ValueError as error:
        print(f"trainer: error: {error}", file=sys.stderr)
        return 2
    print(format_metrics(f"{recipe.name} -> {out}", config["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
