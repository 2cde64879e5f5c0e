"""Evaluate a checkpoint on its test split: `python -m trainer.evaluate --checkpoint DIR`.

MACs are multiply-accumulates of conv and linear layers (the papers' convention),
per image, with predictors and gates included.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainer.checkpoint import load_checkpoint, load_extras
from trainer.data import load_split
from trainer.families import get_family

__all__ = ["evaluate_model", "evaluate_checkpoint", "format_metrics"]


def evaluate_model(model, config: dict, *, data_root=None, device=torch.device("cpu"), extras=None, batch_size=256) -> dict:
    dataset, _ = load_split(config["data"]["dataset"], "test", data_root=data_root or config.get("data_root"))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    extras = {name: m.to(device) for name, m in (extras or {}).items()}
    return get_family(config["family"]).evaluate(model.to(device), loader, device=device, extras=extras)


def evaluate_checkpoint(directory: str | Path, *, data_root=None, device: str = "cpu") -> dict:
    model, config = load_checkpoint(directory)
    extras = load_extras(directory, config)
    return evaluate_model(model, config, data_root=data_root, device=torch.device(device), extras=extras)


def _histogram(histogram: dict) -> str:
    return "  ".join(f"{name}:{count:g}" for name, count in histogram.items())


def format_metrics(title: str, metrics: dict) -> str:
    rows = [("model", metrics["model"]), *metrics["baselines"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"{title}: {metrics['images']} test images; MACs = conv+linear multiply-accumulates per image",
        f"{'':{width}}  {'top-1':>7}  {'MMACs':>8}  paths taken",
    ]
    for name, row in rows:
        lines.append(f"{name:{width}}  {row['accuracy']:7.2%}  {row['mean_macs'] / 1e6:8.3f}  {_histogram(row['histogram'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="output directory of `python -m trainer`")
    parser.add_argument("--data-root", type=Path, help="dataset root, for datasets that do not ship in a package")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    metrics = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, device=args.device)
    print(format_metrics(str(args.checkpoint), metrics))
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
