"""A per-image budget, in MACs or in milliseconds on this device, turned into what a run may use.

Resizable bundles carry their own accuracies and costs (the `budget` rule).
For the others, the device's latency table (runtime/latency_table.py)
supplies each operating point's measured latency, and the manifest its MACs:

- URNet: the most accurate S whose point fits; MACs come from the table
  too, as they depend on the gates;
- DRNet: the resolutions whose paths fit; the predictor chooses among them;
- BlockDrop: the cached paths that fit; an image whose policy asks for
  another path takes the allowed path its policy rates most likely.

Accuracy is each point's top-1 that the exporter measured (Manifest.accuracy).
Among the paths that fit, one that another fitting path beats on both cost and
accuracy is left out: the selector then chooses among the frontier. Without
accuracies, URNet takes the largest S (more blocks) and every fitting path stays.

Latency is the table's median at batch 1, selector and preprocessing
included. A budget below the cheapest point raises BudgetError naming that
point's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.latency_table import LatencyTable
from runtime.lookup_table import BudgetError
from runtime.manifest import Manifest

__all__ = ["Allowance", "allowance", "BudgetError"]


@dataclass(frozen=True)
class Allowance:
    scale: float | None = None  # URNet: the S every image runs at
    paths: frozenset[str] | None = None  # the paths images may take


def allowance(
    manifest: Manifest, table: LatencyTable | None, *, budget_macs: float | None, budget_ms: float | None,
) -> Allowance:
    rule = manifest.rule
    if table is None and (budget_ms is not None or rule.takes_scale):
        need = "milliseconds" if budget_ms is not None else "URNet's MACs at each S"
        raise ValueError(
            f"a budget in {need} needs this device's latency table: make one with `python -m runtime.profile table "
            "--bundle BUNDLE --device DEVICE --out TABLE.json` on the device, then runtime.load(..., table=TABLE.json)"
        )
    if rule.takes_scale:
        points = {p.value: (p.macs, p.latency.median_ms) for p in table.points if p.kind == "scale"}
        fitting = [s for s, cost in points.items() if _fits(cost, budget_macs, budget_ms)]
        if not fitting:
            raise _below_cheapest(points, budget_macs, budget_ms, table, "S")
        top1 = {p.value: p.top1 for p in manifest.accuracy.points} if manifest.accuracy else {}
        return Allowance(scale=max(fitting, key=lambda s: (top1.get(s, 0.0), s)))
    candidates = _candidate_paths(manifest)
    latency = {p.name: p.latency.median_ms for p in table.points if p.kind == "path"} if table else {}
    if budget_ms is not None:
        unmeasured = sorted(set(candidates) - set(latency))
        if unmeasured:
            raise ValueError(f"the latency table {table.bundle} has no row for paths {unmeasured}; measure it again")
    points = {name: (macs, latency.get(name)) for name, macs in candidates.items()}
    fitting = {name: cost for name, cost in points.items() if _fits(cost, budget_macs, budget_ms)}
    if not fitting:
        raise _below_cheapest(points, budget_macs, budget_ms, table, "path")
    top1 = {p.name: p.top1 for p in manifest.accuracy.points} if manifest.accuracy else {}
    spend = {name: cost[1] if budget_ms is not None else cost[0] for name, cost in fitting.items()}
    return Allowance(paths=frozenset(name for name in fitting if not _beaten(name, spend, top1)))


def _beaten(name: str, spend: dict[str, float], top1: dict[str, float]) -> bool:
    """Whether another path costs no more and is no less accurate, and is better on one of the two."""
    if name not in top1:
        return False
    return any(
        spend[other] <= spend[name] and top1[other] >= top1[name]
        and (spend[other] < spend[name] or top1[other] > top1[name])
        for other in spend if other != name and other in top1
    )


def _candidate_paths(manifest: Manifest) -> dict[str, float]:
    """Paths a budget can choose among, with their MACs (selector included)."""
    dispatch = manifest.dispatch
    paths = dispatch.probe_paths(manifest.graphs)
    if manifest.dispatch.rule == "policy":
        cached = {c.path for c in dispatch.cached_paths}
        if not cached:
            raise ValueError("this BlockDrop bundle caches no paths, and a budget chooses among cached paths: "
                             "export it with --cache-paths N")
        paths = {name: macs for name, macs in paths.items() if name in cached}
    return paths


def _fits(cost: tuple[float, float | None], budget_macs: float | None, budget_ms: float | None) -> bool:
    macs, ms = cost
    return (budget_macs is None or macs <= budget_macs) and (budget_ms is None or ms <= budget_ms)


def _below_cheapest(points: dict, budget_macs, budget_ms, table: LatencyTable | None, kind: str) -> BudgetError:
    if budget_ms is not None:
        name, (_, ms) = min(points.items(), key=lambda item: item[1][1])
        where = f"{table.device}/{table.backend}"
        return BudgetError(f"no operating point within {budget_ms:g} ms: the cheapest, {kind} {name}, "
                           f"costs {ms:.3f} ms on {where}")
    name, (macs, _) = min(points.items(), key=lambda item: item[1][0])
    return BudgetError(f"no operating point within {budget_macs:.0f} MACs: the cheapest, {kind} {name}, "
                       f"costs {macs:.0f} MACs")
