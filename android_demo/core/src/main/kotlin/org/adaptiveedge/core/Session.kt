package org.adaptiveedge.core

import org.adaptiveedge.core.rules.Dispatcher
import org.adaptiveedge.core.rules.GraphCall
import org.adaptiveedge.core.rules.Request

/**
 * Runs one graph on one batch. The app implements it with ExecuTorch's
 * `Module` (one method per graph, called by `Graph.entry`); the tests with
 * outputs recorded from the Python runtime.
 */
interface GraphRunner {
    val backend: String  // the runtime backend's name, e.g. "executorch": latency keys use it
    fun describe(): String  // what actually executes: library version, threads

    fun run(graph: Graph, inputs: List<Tensor>): List<Tensor>
}

class RunResult(
    val logits: Tensor,  // (N, classes)
    val paths: List<String>,  // per sample, the path it took
    val macs: LongArray,  // per sample, selector included
    val timings: Map<String, Double>,  // milliseconds: "preprocess", then per graph, summed over calls
)

/**
 * A loaded bundle, `runtime.session.Session`'s counterpart: preprocess, then
 * the rule's dispatcher, which calls graphs through [runner] in chunks of the
 * bundle's max_batch, timing each graph. A budget goes to the rule where it
 * has costs of its own (Resizable's), else through [allowance] to the paths
 * it admits.
 */
class Session(val manifest: Manifest, val runner: GraphRunner, val device: String? = manifest.producer["device"]) {
    private val dispatcher: Dispatcher = manifest.dispatcher()

    val takesScale: Boolean get() = manifest.rule.takesScale
    val takesBudget: Boolean get() = manifest.rule.takesBudget
    val latencyKey: String? get() = device?.let { "$it/${runner.backend}" }

    fun run(
        images: Images, scale: DoubleArray? = null, path: String? = null, static: Boolean = false,
        budgetMacs: Double? = null, budgetMs: Double? = null,
    ): RunResult = run({ Preprocess.prepare(images, manifest.preprocessing) }, scale, path, static, budgetMacs, budgetMs)

    /** Run an already normalized float32 NCHW batch. */
    fun run(
        batch: Tensor, scale: DoubleArray? = null, path: String? = null, static: Boolean = false,
        budgetMacs: Double? = null, budgetMs: Double? = null,
    ): RunResult = run({ Preprocess.prepare(batch, manifest.preprocessing) }, scale, path, static, budgetMacs, budgetMs)

    private fun run(
        prepare: () -> Tensor, scale: DoubleArray?, path: String?, static: Boolean, budgetMacs: Double?, budgetMs: Double?,
    ): RunResult {
        val admitted = checkRequest(scale, path, static, budgetMacs, budgetMs)
        val start = System.nanoTime()
        val batch = prepare()
        return dispatch(batch, (System.nanoTime() - start) / 1e6, scale, path, static, budgetMacs, budgetMs, admitted)
    }

    /**
     * What `Session.run` refuses before touching the images, in the Python
     * runtime's order and words; and the paths a budget admits on a bundle
     * whose rule has no costs of its own ([allowance]), else null.
     */
    private fun checkRequest(scale: DoubleArray?, path: String?, static: Boolean, budgetMacs: Double?, budgetMs: Double?): Set<String>? {
        for ((name, value) in listOf("budget_macs" to budgetMacs, "budget_ms" to budgetMs)) {
            if (value != null && !(value.isFinite() && value > 0)) {
                throw IllegalArgumentException("$name must be a positive number, got ${Python.repr(value)}")
            }
        }
        val budgeted = budgetMacs != null || budgetMs != null
        require(!(static && path != null)) { "pass either path= or static=True, not both" }
        require(!(static && budgeted)) { "pass either static=True or a budget, not both: the static model has one cost" }
        require(!(path != null && budgeted)) { "pass either path= or a budget, not both" }
        require(budgetMs == null || device != null) { "budget_ms: latency is measured per device; pass device= to runtime.load" }
        if (!budgeted || takesBudget) return null
        require(scale == null) { "pass either scale= or a budget, not both: the budget picks S" }
        return allowance(manifest, budgetMacs, budgetMs)
    }

    private fun dispatch(
        batch: Tensor, preprocessMs: Double, scale: DoubleArray?, path: String?, static: Boolean, budgetMacs: Double?, budgetMs: Double?,
        admitted: Set<String>?,
    ): RunResult {
        val timings = linkedMapOf("preprocess" to preprocessMs)
        val scales = scales(scale, batch.batch)
        val call = GraphCalls(timings)
        if (static) {
            val reference = manifest.dispatch.reference
            val logits = call(reference, batch)[0]
            return RunResult(logits, List(batch.batch) { reference }, LongArray(batch.batch) { manifest.referenceMacs }, timings)
        }
        val request = Request(scales, path, budgetMacs, budgetMs, latencyKey, admitted)
        val decision = dispatcher.dispatch(call, batch, request)
        return RunResult(decision.logits, decision.paths, decision.macs, timings)
    }

    /** One S per image, float32 as the graphs take it; [scale] is one number (size 1) or one per image. */
    private fun scales(scale: DoubleArray?, count: Int): FloatArray? {
        val shown = scale?.let { if (it.size == 1) Python.repr(it[0]) else Python.repr(it.toList()) }
        if (!takesScale) {
            require(scale == null) { "this ${manifest.family} bundle has no compute scale; drop scale=$shown" }
            return null
        }
        val values = scale ?: doubleArrayOf(1.0)
        require(values.size == 1 || values.size == count) { "scale must be one number or one per image ($count), got shape (${values.size},)" }
        require(values.all { it.isFinite() && it >= 0 && it <= 1 }) { "scale must lie in [0, 1], got $shown" }
        return FloatArray(count) { values[if (values.size == 1) 0 else it].toFloat() }
    }

    /** Calls graphs by name on batches of any size, in chunks of at most max_batch, timing each graph. */
    private inner class GraphCalls(val timings: MutableMap<String, Double>) : GraphCall {
        override fun invoke(name: String, vararg inputs: Tensor): List<Tensor> {
            val graph = manifest.graphs.getValue(name)
            val size = manifest.maxBatch
            val start = System.nanoTime()
            val count = inputs[0].batch
            val outputs = if (count <= size) {
                runner.run(graph, inputs.toList())
            } else {
                val chunks = (0 until count step size).map { from ->
                    runner.run(graph, inputs.map { it.slice(from, minOf(from + size, count)) })
                }
                chunks[0].indices.map { j -> Tensor.concat(chunks.map { it[j] }) }
            }
            timings[name] = (timings[name] ?: 0.0) + (System.nanoTime() - start) / 1e6
            return outputs
        }
    }
}
