"""Evaluate a checkpoint on its test split: `python -m trainer.evaluate --checkpoint DIR`.

MACs are multiply-accumulates of conv and linear layers (the papers' convention),
per image, with predictors and gates included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from runtime.format.files import atomic_write
from trainer.checkpoint import load_checkpoint, load_extras
from trainer.data import load_split
from trainer.families import get_family
from trainer.plots import plot_metrics

__all__ = ["evaluate_model", "evaluate_checkpoint", "format_metrics"]


def evaluate_model(
    model, config: dict, *, data_root=None, device=torch.device("cpu"), extras=None, batch_size=256,
    test_subset: int | None = None,
) -> dict:
    """Metrics on the test split, or on a fixed, seeded random `test_subset` of it (quick runs)."""
    dataset, _ = load_split(
        config["data"]["dataset"], "test", data_root=data_root or config.get("data_root"), subset=test_subset
    )
    # Decode once: families sweep the test split many times (operating points, baselines).
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    dataset = TensorDataset(torch.stack(images), torch.as_tensor(labels))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    # Companion networks come straight from training in train mode; BN must use its running statistics.
    extras = {name: m.to(device).eval() for name, m in (extras or {}).items()}
    return get_family(config["family"]).evaluate(model.to(device), loader, device=device, extras=extras)


def evaluate_checkpoint(directory: str | Path, *, data_root=None, device: str = "cpu") -> dict:
    model, config = load_checkpoint(directory)
    extras = load_extras(directory, config)
    return evaluate_model(model, config, data_root=data_root, device=torch.device(device), extras=extras)


def _histogram(histogram: dict, shown: int = 4) -> str:
    items = sorted(histogram.items(), key=lambda item: -item[1]) if len(histogram) > shown else histogram.items()
    text = "  ".join(f"{name}:{count:g}" for name, count in list(items)[:shown])
    return text + (f"  ... ({len(histogram)} distinct)" if len(histogram) > shown else "")


def _blocks(row: dict) -> str:
    return f"{row['blocks_mean']:5.2f}+-{row.get('blocks_std', 0.0):<5.2f}" if "blocks_mean" in row else ""


def format_metrics(title: str, metrics: dict) -> str:
    rows = [(metrics["model"].get("label", "model"), metrics["model"]), *metrics["baselines"].items()]
    width = max(len(name) for name, _ in rows)
    blocks = "blocks used  " if "blocks_mean" in metrics["model"] else ""
    lines = [
        f"{title}: {metrics['images']} test images; MACs = conv+linear multiply-accumulates per image",
        f"{'':{width}}  {'top-1':>7}  {'MMACs':>8}  {blocks}paths taken",
    ]
    for name, row in rows:
        lines.append(
            f"{name:{width}}  {row['accuracy']:7.2%}  {row['mean_macs'] / 1e6:8.3f}  {_blocks(row)}  {_histogram(row['histogram'])}"
        )
    points = [p for p in metrics.get("operating_points", []) if "scale" in p]
    if points:
        names = ["URNet", *points[0]["baselines"]]
        lines += ["", "S sweep: top-1 / MMACs / blocks used per block (mean over images)",
                  f"{'S':>5}  " + "  ".join(f"{n:>26}" for n in names)]
        for p in points:
            cells = [p["model"], *p["baselines"].values()]
            lines.append(f"{p['scale']:5.1f}  " + "  ".join(
                f"{c['accuracy']:8.2%} {c['mean_macs'] / 1e6:8.3f} {c['usage']:8.2f}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="output directory of `python -m trainer`")
    parser.add_argument("--data-root", type=Path, help="dataset root, for datasets that do not ship in a package")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path,
                        help="FILE.json (the figures go into FILE/), or a directory for metrics.json and the figures "
                        "(default: CHECKPOINT/eval)")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"trainer.evaluate: error: {error}", file=sys.stderr)
        return 2
    print(format_metrics(str(args.checkpoint), metrics))
    out = args.out or args.checkpoint / "eval"
    metrics_file, figures = (out, out.with_suffix("")) if out.suffix == ".json" else (out / "metrics.json", out)
    text = json.dumps(metrics, indent=2) + "\n"
    atomic_write(metrics_file, lambda temporary: Path(temporary).write_text(text))
    for path in [metrics_file, *plot_metrics(metrics, figures)]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
