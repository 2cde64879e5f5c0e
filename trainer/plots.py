"""Figures from an evaluation's metrics: whichever the metrics hold data for."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_metrics", "plot_scale_sweep"]


def _accuracy_vs_macs(metrics: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    points = [p for p in metrics.get("operating_points", []) if "scale" in p]
    if points:
        series = {"URNet": [p["model"] for p in points]}
        for name in points[0]["baselines"]:
            series[name] = [p["baselines"][name] for p in points]
        for name, rows in series.items():
            axes.plot([r["mean_macs"] / 1e6 for r in rows], [r["accuracy"] * 100 for r in rows], "o-", label=name)
    else:
        rows = [(metrics["model"].get("label", "model"), metrics["model"]), *metrics["baselines"].items()]
        for name, row in rows:
            axes.scatter(row["mean_macs"] / 1e6, row["accuracy"] * 100, label=name, s=40)
    axes.set_xlabel("mean MMACs per image (conv + linear)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _usage_map(metrics: dict, path: Path) -> None:
    """URNet Fig. 4: how often each block runs, per scale S."""
    usage = metrics["block_usage_map"]
    scales = list(usage)
    figure, axes = plt.subplots(figsize=(max(6, metrics["num_blocks"] * 0.25), 3))
    image = axes.imshow([usage[s] for s in scales], aspect="auto", vmin=0, vmax=1, cmap="viridis")
    axes.set_yticks(range(len(scales)), [f"S={s}" for s in scales])
    axes.set_xlabel("residual block")
    axes.set_title("block usage per scale")
    figure.colorbar(image, ax=axes, label="fraction of images")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _policy_histogram(metrics: dict, path: Path, shown: int = 20) -> None:
    """Distinct block policies by frequency: what an exporter's path cache would compile."""
    histogram = sorted(metrics["model"]["histogram"].items(), key=lambda item: -item[1])[:shown]
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(histogram) + 1.2))
    axes.barh(range(len(histogram)), [count for _, count in histogram])
    axes.set_yticks(range(len(histogram)), [policy for policy, _ in histogram], fontfamily="monospace", fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("test images")
    total = len(metrics["model"]["histogram"])
    axes.set_title(f"top {len(histogram)} of {total} distinct policies (1 = block runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_scale_sweep(runs: dict[str, dict[float, tuple[float, float]]], path: Path,
                     references: dict[str, dict[float, tuple[float, float]]]) -> Path:
    """URNet Fig. 5 across runs: top-1 and block usage against S, each as S -> (top-1 %, usage fraction).

    Usage should follow the diagonal; `references` (the paper's rows) are drawn dashed.
    """
    figure, (accuracy_axes, usage_axes) = plt.subplots(1, 2, figsize=(11, 4))
    lines = [(name, points, "o-", color) for (name, points), color in zip(runs.items(), cycle(plt.get_cmap("tab10").colors))]
    lines += [(name, points, f"{marker}--", "black") for (name, points), marker in zip(references.items(), cycle("s^vD"))]
    for name, points, style, color in lines:
        scales = sorted(points)
        accuracy_axes.plot(scales, [points[s][0] for s in scales], style, color=color, label=name)
        usage_axes.plot(scales, [points[s][1] for s in scales], style, color=color, label=name)
    every_scale = [s for _, points, _, _ in lines for s in points]
    usage_axes.plot([min(every_scale), max(every_scale)], [min(every_scale), max(every_scale)], ":", color="black",
                    label="usage = S")
    accuracy_axes.set_ylabel("top-1 accuracy (%)")
    usage_axes.set_ylabel("fraction of blocks run")
    for axes in (accuracy_axes, usage_axes):
        axes.set_xlabel("scale S")
        axes.grid(alpha=0.3)
    usage_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_metrics(metrics: dict, directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "accuracy_vs_macs.png"]
    _accuracy_vs_macs(metrics, written[0])
    if "block_usage_map" in metrics:
        written.append(directory / "block_usage_map.png")
        _usage_map(metrics, written[-1])
    elif "num_blocks" in metrics:
        written.append(directory / "policy_histogram.png")
        _policy_histogram(metrics, written[-1])
    return written
