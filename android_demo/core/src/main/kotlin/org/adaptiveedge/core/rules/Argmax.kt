package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Python
import org.adaptiveedge.core.Tensor

/**
 * `argmax` (DRNet): a selector scores the paths, and each sample runs the best
 * one; under a budget, the best one the budget admits. Every graph takes the
 * same normalized image; any resize to the path's resolution happens inside
 * the path's graph.
 */
data class ArgmaxPath(
    override val name: String,
    override val graph: String,
    val resolution: Int? = null,  // informative: the input side this path runs at (DRNet)
) : ScoredPath

data class ArgmaxDispatch(
    override val selector: String,  // graph emitting (N, paths) scores
    val paths: List<ArgmaxPath>,  // in score order
    override val reference: String,
) : Section {
    override val rule = "argmax"

    fun pathMacs(graphs: Map<String, Graph>): Map<String, Long> =
        paths.associate { it.name to graphs.getValue(selector).macs + graphs.getValue(it.graph).macs }

    override fun operatingPoints(graphs: Map<String, Graph>) =
        pathMacs(graphs).map { (name, macs) -> OperatingPoint(name, "path", macs = macs) }

    override fun worstCase(graphs: Map<String, Graph>) = costliestPath(pathMacs(graphs))

    override fun view(path: String) = PathView(detail = paths.firstOrNull { it.name == path }?.resolution?.let { "$it px" })
}

private fun parseArgmax(r: FieldReader, data: Map<String, Any?>, graphs: Map<String, Graph>, classes: Int): Section {
    val d = r.fields(data, "dispatch", setOf("rule", "selector", "paths", "reference"))
    val selector = r.graph(d["selector"], "dispatch.selector")
    val paths = r.list(d["paths"], "dispatch.paths").mapIndexed { i, item ->
        val where = "dispatch.paths[$i]"
        val entry = r.fields(item, where, setOf("name", "graph"), setOf("resolution"))
        ArgmaxPath(
            name = r.text(entry["name"], "$where.name"),
            graph = r.graph(entry["graph"], "$where.graph"),
            resolution = entry["resolution"]?.let { r.count(it, "$where.resolution", 1) },
        )
    }
    val reference = r.graph(d["reference"], "dispatch.reference")
    checkScoredPaths(r, paths, selector, reference, graphs, classes)
    return ArgmaxDispatch(selector, paths, reference)
}

/** Version 2 named the reference by its path; version 3 by its graph, as every rule does. */
private fun upgradeArgmax(r: FieldReader, data: MutableMap<String, Any?>) {
    if ("reference_path" in data) {
        val paths = r.list(data["paths"], "dispatch.paths")
        val graphs = LinkedHashMap<Any?, Any?>()
        for (p in paths) if (p is Map<*, *>) graphs[p["name"]] = p["graph"]
        data["reference"] = graphs[r.choice(data.remove("reference_path"), graphs.keys, "dispatch.reference_path")]
    }
}

private class ArgmaxDispatcher(manifest: Manifest) : Dispatcher {
    private val d = manifest.dispatch as ArgmaxDispatch
    private val names = d.paths.map { it.name }
    private val macs = d.pathMacs(manifest.graphs).values.toLongArray()
    private val selectorMacs = manifest.graphs.getValue(d.selector).macs
    private val classes = manifest.classes.size

    override fun dispatch(call: GraphCall, batch: Tensor, request: Request): Decision {
        val force = request.path
        val only = request.admitted?.singleOrNull()
        if (force == null && only != null) {
            // A budget that admits one path leaves the selector nothing to choose: it is skipped, and not counted.
            val index = names.indexOf(only)
            val logits = call(d.paths[index].graph, batch)[0]
            return Decision(logits, List(batch.batch) { only }, LongArray(batch.batch) { macs[index] - selectorMacs })
        }
        val scores = call(d.selector, batch)[0]
        val admitted = request.admitted?.let { within -> BooleanArray(names.size) { names[it] in within } }
        val choice = when {
            // a budget: the best-scored path among those it admits
            force == null -> IntArray(batch.batch) { argmax(scores.data, it * names.size, names.size, admitted) }
            force in names -> IntArray(batch.batch) { names.indexOf(force) }
            else -> throw IllegalArgumentException("path ${Python.repr(force)} is not one of this bundle's paths ${Python.repr(names)}")
        }
        val logits = Tensor(intArrayOf(batch.batch, classes), FloatArray(batch.batch * classes))
        runGroups(call, batch, choice, d.paths.map { it.graph }, logits)
        return Decision(logits, choice.map { names[it] }, LongArray(choice.size) { macs[choice[it]] })
    }
}

/** Each group of samples sharing a choice runs its path's graph once; the logits land in input order. */
internal fun runGroups(call: GraphCall, batch: Tensor, choice: IntArray, graphs: List<String>, logits: Tensor) {
    for ((index, rows) in groups(choice)) {
        if (rows == null) {
            call(graphs[index], batch)[0].data.copyInto(logits.data)
        } else {
            logits.scatterRows(rows, call(graphs[index], batch.rows(rows))[0])
        }
    }
}

val ARGMAX = Rule(name = "argmax", parse = ::parseArgmax, dispatcher = ::ArgmaxDispatcher, upgrade = ::upgradeArgmax)
