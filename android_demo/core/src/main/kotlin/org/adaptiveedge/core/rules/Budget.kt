package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Python
import org.adaptiveedge.core.Tensor

/** How to give the paths latencies on a device: the end of every refusal of a budget in ms for want of them. */
const val MEASURE_HINT =
    "To add latencies: export with `--configurations all --no-selector`, run `python -m runtime.profile table` on the " +
        "device, merge it with `python -m trainer.resizable_nas CHECKPOINT --profile TABLE.json`, and export again"

/**
 * `budget` (Resizable networks): paths carry accuracy and measured cost, and a
 * budget decides which may run. Without a selector every image runs the most
 * accurate path within the budget (a table pick); with one (the ResizeLearner)
 * each image runs the path the selector scores best among those within it,
 * the selector's own cost counted. No budget admits every path.
 */
data class BudgetPath(
    override val name: String,
    override val graph: String,
    val factors: List<Double>,  // informative: one scale factor per stage
    val accuracy: Double,  // top-1 on the test split, after BN calibration
    val latencyMs: Map<String, Double>,  // "device/backend" -> median ms at batch 1
) : ScoredPath

data class BudgetDispatch(
    override val selector: String?,  // graph emitting (N, paths) scores, or null: table picks only
    val paths: List<BudgetPath>,  // in score order
    override val reference: String,
    val selectorLatencyMs: Map<String, Double>,
) : Section {
    override val rule = "budget"

    fun selectorMacs(graphs: Map<String, Graph>): Long = selector?.let { graphs.getValue(it).macs } ?: 0L

    fun pathMacs(graphs: Map<String, Graph>): Map<String, Long> =
        paths.associate { it.name to selectorMacs(graphs) + graphs.getValue(it.graph).macs }

    override fun operatingPoints(graphs: Map<String, Graph>) =
        pathMacs(graphs).map { (name, macs) -> OperatingPoint(name, "path", macs = macs) }

    override fun worstCase(graphs: Map<String, Graph>) = costliestPath(pathMacs(graphs))

    override fun view(path: String) =
        PathView(detail = paths.firstOrNull { it.name == path }?.factors?.joinToString(" / ", "stage scales ") { Python.floatRepr(it) })
}

private fun latencies(r: FieldReader, value: Any?, where: String): Map<String, Double> {
    val table = r.map(value, where)
    val latencies = LinkedHashMap<String, Double>()
    for ((k, v) in table) latencies[r.text(k, "$where key")] = r.number(v, "$where[${Python.repr(k)}]")
    for ((key, ms) in latencies) {
        if (!(ms > 0)) throw r.fail("$where[${Python.repr(key)}]", "must be a positive number of milliseconds, got ${Python.str(ms)}")
    }
    return latencies
}

private fun parseBudget(r: FieldReader, data: Map<String, Any?>, graphs: Map<String, Graph>, classes: Int): Section {
    val d = r.fields(data, "dispatch", setOf("rule", "selector", "paths", "reference", "selector_latency_ms"))
    val selector = d["selector"]?.let { r.graph(it, "dispatch.selector") }
    val paths = r.list(d["paths"], "dispatch.paths").mapIndexed { i, item ->
        val where = "dispatch.paths[$i]"
        val entry = r.fields(item, where, setOf("name", "graph", "factors", "accuracy", "latency_ms"))
        val factors = r.list(entry["factors"], "$where.factors")
        val accuracy = r.number(entry["accuracy"], "$where.accuracy")
        if (!(accuracy in 0.0..1.0)) throw r.fail("$where.accuracy", "must lie in [0, 1], got ${Python.str(accuracy)}")
        BudgetPath(
            name = r.text(entry["name"], "$where.name"),
            graph = r.graph(entry["graph"], "$where.graph"),
            factors = r.floats(factors, "$where.factors", factors.size),
            accuracy = accuracy,
            latencyMs = latencies(r, entry["latency_ms"], "$where.latency_ms"),
        )
    }
    val reference = r.graph(d["reference"], "dispatch.reference")
    checkScoredPaths(r, paths, selector, reference, graphs, classes)
    return BudgetDispatch(selector, paths, reference, latencies(r, d["selector_latency_ms"], "dispatch.selector_latency_ms"))
}

private class BudgetDispatcher(manifest: Manifest) : Dispatcher {
    private val d = manifest.dispatch as BudgetDispatch
    private val graphs = d.paths.map { it.graph }
    private val names = d.paths.map { it.name }
    private val index = names.withIndex().associate { it.value to it.index }
    private val pathMacs = d.pathMacs(manifest.graphs).values.toList()
    private val graphMacs = graphs.map { manifest.graphs.getValue(it).macs }
    private val classes = manifest.classes.size
    private val unbudgeted = admitted(Request())  // computed once: most calls carry no budget

    /** Path indices within the request's budget, most accurate first (all paths when there is none): [admissible]'s. */
    fun admitted(request: Request): List<Int> {
        val key = request.latencyKey
        var overheadMs = 0.0
        if (request.budgetMs != null) {
            requireLatencies(d.paths.associate { it.name to it.latencyMs }, key, MEASURE_HINT)
            if (d.selector != null) {
                overheadMs = d.selectorLatencyMs[key] ?: throw IllegalArgumentException(
                    "the selector's latency was not measured on ${Python.repr(key)} (measured on: " +
                        "${if (d.selectorLatencyMs.isEmpty()) "nothing" else Python.repr(d.selectorLatencyMs.keys.sorted())}); " +
                        "budget it in MACs, or: $MEASURE_HINT",
                )
            }
        }
        val options = d.paths.mapIndexed { i, p ->
            Option(p.name, pathMacs[i].toDouble(), request.budgetMs?.let { p.latencyMs.getValue(key!!) + overheadMs }, p.accuracy)
        }
        return admissible(options, Budget(request.budgetMacs, request.budgetMs, key)).map { index.getValue(it.name) }
    }

    override fun dispatch(call: GraphCall, batch: Tensor, request: Request): Decision {
        val force = request.path
        if (force != null && force !in names) {
            throw IllegalArgumentException("path ${Python.repr(force)} is not one of this bundle's paths ${Python.repr(names)}")
        }
        val budgeted = request.budgetMacs != null || request.budgetMs != null
        val admitted = if (budgeted && force == null) admitted(request) else unbudgeted
        val n = batch.batch
        if (admitted.size == 1 && force == null) {
            // One admitted path leaves the selector nothing to choose: it is skipped, and not counted.
            val index = admitted[0]
            val logits = call(graphs[index], batch)[0]
            return Decision(logits, List(n) { names[index] }, LongArray(n) { graphMacs[index] })
        }
        val scores = d.selector?.let { call(it, batch)[0] }
        val choice = when {
            force != null -> IntArray(n) { names.indexOf(force) }
            scores == null -> IntArray(n) { admitted[0] }
            admitted.size == graphs.size -> IntArray(n) { argmax(scores.data, it * graphs.size, graphs.size) }
            else -> {
                val allowed = BooleanArray(graphs.size) { it in admitted }
                IntArray(n) { argmax(scores.data, it * graphs.size, graphs.size, allowed) }
            }
        }
        val logits = Tensor(intArrayOf(n, classes), FloatArray(n * classes))
        runGroups(call, batch, choice, graphs, logits)
        return Decision(logits, choice.map { names[it] }, LongArray(n) { pathMacs[choice[it]] })
    }
}

val BUDGET = Rule(name = "budget", parse = ::parseBudget, dispatcher = ::BudgetDispatcher, takesBudget = true, since = 4)
