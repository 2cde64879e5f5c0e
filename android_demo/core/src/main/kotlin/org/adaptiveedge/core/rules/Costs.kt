package org.adaptiveedge.core.rules

import org.adaptiveedge.core.Python

/**
 * The one budget solver, `runtime/serving/costs.py`: which operating points
 * fit a per-image budget, best first, and which are worth running. A
 * Resizable bundle's own paths (the `budget` rule) and the other families'
 * operating points (`allowance`) go through it, so that a budget is refused
 * with one wording whichever answers it. An option's cost is per image and
 * includes whatever runs before it (a selector).
 */

/** No operating point fits the budget; the message names the cheapest and what it costs (`BudgetError`). */
class BudgetException(message: String) : IllegalArgumentException(message)

/**
 * IllegalArgumentException unless every option (name -> {latency key: ms}) was
 * measured at [key]: it names the options that were not, where they were
 * measured, and [how] to measure them.
 */
fun requireLatencies(latencies: Map<String, Map<String, Double>>, key: String?, how: String) {
    requireNotNull(key) { "budget_ms needs to know where latency was measured: a device/backend key" }
    val missing = latencies.filterValues { key !in it }.keys.toList()
    if (missing.isNotEmpty()) {
        val measured = latencies.values.flatMap { it.keys }.toSortedSet().toList()
        throw IllegalArgumentException(
            "no latency measured on ${Python.repr(key)} for ${Python.repr(missing.take(3))}${if (missing.size > 3) "..." else ""}; " +
                "measured on: ${if (measured.isEmpty()) "nothing" else Python.repr(measured)}. $how",
        )
    }
}

/** One operating point as a budget sees it. */
data class Option(
    val name: String,
    val macs: Double,  // per image, selector included
    val ms: Double? = null,  // per image where the budget is measured, selector included; null: not measured there
    val top1: Double? = null,  // null: not measured
)

/** A per-image ceiling in MACs, in milliseconds measured at [where], or both. */
data class Budget(val macs: Double? = null, val ms: Double? = null, val where: String? = null) {
    fun fits(option: Option): Boolean = (macs == null || option.macs <= macs) && (ms == null || option.ms!! <= ms)

    /** Python's `str(Budget)`, which every refusal quotes. */
    override fun toString(): String {
        val parts = mutableListOf<String>()
        if (macs != null) parts += "${Python.fixed(macs, 0)} MACs"
        if (ms != null) parts += "${Python.fixed(ms, 3)} ms on ${where ?: "None"}"
        return parts.joinToString(" and ")
    }
}

/**
 * The options within [budget], best first; [BudgetException] naming the
 * cheapest when none fits. Best is the most accurate, ties going to fewer
 * MACs. Without measured accuracies, more compute is taken for more accuracy:
 * the costliest first.
 */
fun admissible(options: List<Option>, budget: Budget): List<Option> {
    if (options.isEmpty()) throw BudgetException("no operating point to choose from")
    if (budget.ms != null) {
        val unmeasured = options.filter { it.ms == null }.map { it.name }
        require(unmeasured.isEmpty()) { "no latency measured on ${budget.where ?: "None"} for ${Python.repr(unmeasured)}" }
    }
    val fitting = options.filter { budget.fits(it) }
    if (fitting.isEmpty()) {
        val cheapest = options.minWith(if (budget.ms != null) compareBy({ it.ms }, { it.macs }) else compareBy { it.macs })
        val cost = Budget(cheapest.macs.takeIf { budget.macs != null }, cheapest.ms.takeIf { budget.ms != null }, budget.where)
        throw BudgetException("no operating point within $budget: the cheapest, ${cheapest.name}, costs $cost")
    }
    if (fitting.all { it.top1 != null }) return fitting.sortedWith(compareBy({ -it.top1!! }, { it.macs }))
    return fitting.sortedByDescending { it.macs }
}

/**
 * The options no other beats at [cost], in their order: none costs no more and
 * is no less accurate, and is better on one of the two. An option without a
 * measured accuracy is never beaten, nor beats another.
 */
fun frontier(options: List<Option>, cost: (Option) -> Double): List<Option> {
    fun beaten(option: Option): Boolean = option.top1 != null && options.any { other ->
        other !== option && other.top1 != null && cost(other) <= cost(option) && other.top1 >= option.top1 &&
            (cost(other) < cost(option) || other.top1 > option.top1)
    }
    return options.filter { !beaten(it) }
}
