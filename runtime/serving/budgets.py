"""A per-image budget, in MACs or in milliseconds on this device, turned into what a run may use.

Resizable bundles carry their own accuracies and costs (the `budget` rule).
For the others, the device's latency table (runtime/format/latency_table.py)
supplies each operating point's measured latency, and the manifest its MACs:

- URNet: the most accurate S whose point fits; MACs come from the table
  too, as they depend on the gates;
- DRNet and BlockDrop: the operating points (resolutions, cached paths) that
  fit; the selector chooses among them per image, and an image whose policy
  asks for another path takes the admitted path its policy rates most likely.

Accuracy is each point's top-1 that the exporter measured (Manifest.accuracy).
Among the paths that fit, one that another fitting path beats on both cost and
accuracy is left out: the selector then chooses among the frontier. Without
accuracies, URNet takes the largest S (more blocks) and every fitting path stays.
Both go through the one solver, runtime/serving/costs.py.

Latency is the table's median at batch 1, selector and preprocessing
included. A budget below the cheapest point raises BudgetError naming that
point's cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.format.latency_table import LatencyTable
from runtime.format.manifest import Manifest
from runtime.serving.costs import Budget, BudgetError, Option, admissible, frontier

__all__ = ["Allowance", "allowance", "BudgetError"]

TABLE_HINT = ("make one with `python -m runtime.profile table --bundle BUNDLE --device DEVICE --out TABLE.json` on the "
              "device, then runtime.load(..., table=TABLE.json)")


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
        raise ValueError(f"a budget in {need} needs this device's latency table: {TABLE_HINT}")
    where = f"{table.device}/{table.backend}" if table else None
    budget = Budget(budget_macs, budget_ms, where)
    top1 = {p.name: p.top1 for p in manifest.accuracy.points} if manifest.accuracy else {}
    points = manifest.dispatch.operating_points(manifest.graphs)
    measured = {p.name: p for p in table.points} if table else {}
    unmeasured = [p.name for p in points if p.name not in measured and (budget_ms is not None or p.macs is None)]
    if unmeasured:
        raise ValueError(f"the latency table {table.bundle} has no row for {unmeasured}; measure it again")
    options = [
        Option(p.name, p.macs if p.macs is not None else measured[p.name].macs,
               measured[p.name].latency.median_ms if p.name in measured else None, top1.get(p.name))
        for p in points
    ]
    fitting = admissible(options, budget)
    if rule.takes_scale:
        return Allowance(scale=next(p.value for p in points if p.name == fitting[0].name))
    spend = (lambda o: o.ms) if budget_ms is not None else (lambda o: o.macs)
    return Allowance(paths=frozenset(o.name for o in frontier(fitting, spend)))
