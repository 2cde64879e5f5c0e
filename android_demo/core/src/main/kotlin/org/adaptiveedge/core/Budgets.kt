package org.adaptiveedge.core

import org.adaptiveedge.core.rules.Budget
import org.adaptiveedge.core.rules.Option
import org.adaptiveedge.core.rules.admissible
import org.adaptiveedge.core.rules.frontier

/** How to get what a budget in ms (or on URNet's S) needs, as `runtime/serving/budgets.py` says it. */
const val TABLE_HINT =
    "make one with `python -m runtime.profile table --bundle BUNDLE --device DEVICE --out TABLE.json` on the " +
        "device, then runtime.load(..., table=TABLE.json)"

/**
 * A per-image budget on a bundle whose rule has no costs of its own, turned
 * into the paths its images may take: `runtime.serving.budgets.allowance`
 * without a latency table, which the core has none of. Milliseconds, and
 * URNet's MACs at each S (they depend on the gates), are measured only in a
 * device's table, so those budgets are refused with Python's words. A budget
 * in MACs admits the operating points within it that no other fitting point
 * beats on both MACs and top-1 (the manifest's `accuracy`): the selector
 * chooses among those, per image.
 */
fun allowance(manifest: Manifest, budgetMacs: Double?, budgetMs: Double?): Set<String> {
    if (budgetMs != null || manifest.rule.takesScale) {
        val need = if (budgetMs != null) "milliseconds" else "URNet's MACs at each S"
        throw IllegalArgumentException("a budget in $need needs this device's latency table: $TABLE_HINT")
    }
    val top1 = manifest.accuracy?.points?.associate { it.name to it.top1 } ?: emptyMap()
    val options = manifest.dispatch.operatingPoints(manifest.graphs).map {
        Option(it.name, it.macs!!.toDouble(), top1 = top1[it.name])  // a path point's MACs are the manifest's
    }
    return frontier(admissible(options, Budget(macs = budgetMacs)), Option::macs).map { it.name }.toSet()
}
