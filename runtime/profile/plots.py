"""Pictures of measurements: a latency table's paths and fit, several devices against MACs, the accuracy-latency
frontier of operating points, a controller's trace.

Host-side: matplotlib is imported when a picture is drawn, so that a device
running bundles needs none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.format.latency_table import LatencyTable
from runtime.profile.compare import Measured, labels

__all__ = ["plot_table", "plot_latency_against_macs", "plot_frontier", "plot_controller_trace"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return Path(path)


def plot_table(table: LatencyTable, directory: str | Path) -> list[Path]:
    """`points.png`: each operating point's median with p90, and its prediction from its graph calls;
    `fit.png`: measured latency against the fit latency ~ MACs + calls, graphs and points."""
    plt, directory = _pyplot(), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(max(5, 0.6 * len(table.points) + 2) + 2.5, 4))
    x = np.arange(len(table.points))
    medians = [p.latency.median_ms for p in table.points]
    p90 = [p.latency.p90_ms for p in table.points]
    predicted = [p.predicted_ms for p in table.points]
    axes.bar(x, medians, color="tab:blue", label="median")
    axes.vlines(x, medians, p90, color="black", label="up to p90")
    axes.plot(x, predicted, "D", color="tab:orange", label="predicted from graph calls")
    axes.axhline(table.static.median_ms, color="gray", linestyle="--", label="static full model")
    top = 1.25 * max(*p90, *predicted, table.static.median_ms)
    axes.set_ylim(0, top)  # p99 tails would squash the medians: they are in the table, named, when beyond
    for i, point in enumerate(table.points):
        if point.latency.p99_ms > top:
            axes.annotate(f"p99 {point.latency.p99_ms:.2f}", (i, top), ha="center", va="top", fontsize=6)
    axes.set_xticks(x, [p.name for p in table.points], rotation=45, ha="right", fontsize="small")
    axes.set_ylabel("ms per image, batch 1")
    axes.set_title(f"{table.family} on {table.device}/{table.backend}")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    written = [_save(figure, directory / "points.png")]
    if table.fit:
        fit = table.fit
        samples = [(g.macs, 1.0, g.batches[1].median_ms, "graph") for g in table.graphs.values()]
        samples += [(p.macs, sum(p.calls.values()), p.latency.median_ms, "point") for p in table.points]
        figure, axes = plt.subplots(figsize=(5.5, 4.5))
        for kind, marker in (("graph", "o"), ("point", "s")):
            rows = [(m, c, ms) for m, c, ms, k in samples if k == kind]
            fitted = [fit.ms_per_gmac * m / 1e9 + fit.ms_per_call * c + fit.constant_ms for m, c, _ in rows]
            axes.plot(fitted, [ms for *_, ms in rows], marker, linestyle="none", label=f"{kind}s")
        top = max(ms for *_, ms, _ in samples)
        axes.plot([0, top], [0, top], color="gray", linewidth=1)
        axes.set_xlabel(f"fit: {fit.ms_per_gmac:.2f} ms/GMAC + {fit.ms_per_call:.3f} ms/call + {fit.constant_ms:.3f} ms")
        axes.set_ylabel("measured median ms")
        axes.set_title(f"R^2 = {fit.r2:.3f} over {fit.points} graphs and points")
        axes.legend(fontsize="small")
        written.append(_save(figure, directory / "fit.png"))
    return written


def plot_latency_against_macs(measured: Sequence[Measured], path: str | Path) -> Path:
    """Latency against MACs per source (runtime.profile.compare.Measured), each point named, the static full model
    starred."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, m in zip(labels(measured), measured):
        names, costs = zip(*m.rows.items())
        macs, ms = zip(*costs)
        line, = axes.plot([x / 1e6 for x in macs], ms, "o", label=label)
        axes.plot([m.static_macs / 1e6], [m.static_ms], "*", markersize=12, color=line.get_color())
        for name, x, y in zip(names, macs, ms):
            axes.annotate(name, (x / 1e6, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                          color=line.get_color())
    axes.set_xlabel("MMACs per image (conv + linear)")
    axes.set_ylabel("median latency, batch 1 (ms)")
    axes.set_title("operating points; * the static full model")
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_frontier(curves: dict[str, Sequence[tuple[str, float, float]]], path: str | Path) -> Path:
    """Top-1 against median latency, one curve per bundle or backend: `curves[label]` lists (point, ms, top-1).
    The points that no other point beats on both axes are joined: that is the frontier a budget picks from."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        ms, accuracy = np.array([p[1] for p in points]), np.array([p[2] for p in points])
        dots = axes.scatter(ms, accuracy, label=label)
        frontier = [i for i in np.argsort(ms) if not ((ms < ms[i]) & (accuracy >= accuracy[i])).any()]
        axes.plot(ms[frontier], accuracy[frontier], color=dots.get_facecolor()[0])
        for name, x, y in points:
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axes.set_xlabel("median latency, batch 1 (ms)")
    axes.set_ylabel("top-1")
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_controller_trace(served: Sequence, objective_ms: float, path: str | Path, *, window: int = 50) -> Path:
    """A replayed stream (runtime.serving.controller.Served): arrival rate, rolling p95 against the objective, the budget."""
    plt = _pyplot()
    index = np.arange(len(served))
    arrivals = np.array([s.arrival for s in served])
    latency = np.array([s.latency_ms for s in served])
    gaps = np.diff(arrivals, prepend=arrivals[0])
    rate = [1 / max(np.mean(gaps[max(1, i - window + 1) : i + 1]), 1e-9) if i else np.nan for i in index]
    p95 = [np.percentile(latency[max(0, i - window + 1) : i + 1], 95) for i in index]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    top.plot(index, rate)
    top.set_ylabel("requests / s")
    middle.plot(index, p95, label=f"p95 over {window} requests")
    middle.axhline(objective_ms, color="red", linestyle="--", label="objective")
    middle.set_ylabel("end-to-end ms")
    middle.legend(fontsize="small")
    bottom.step(index, [s.budget_ms for s in served], where="post")
    bottom.set_ylabel("budget ms")
    bottom.set_xlabel("request")
    return _save(figure, path)
