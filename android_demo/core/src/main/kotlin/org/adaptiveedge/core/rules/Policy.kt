package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Python
import org.adaptiveedge.core.Tensor
import kotlin.math.ln
import kotlin.math.ln1p

/**
 * `policy` (BlockDrop): a policy graph decides, once per image, which residual
 * blocks run. Per sample `keep = selector(image) >= 0.5`, with left-out blocks
 * forced off. A cached path maps the image to logits in one call; otherwise
 * the stem runs, then per block its `run` or `skip` graph (a fused segment
 * replacing a run of kept blocks), then the head. In a batch, samples on one
 * cached path share a call, and the rest walk the blocks together. Under a
 * budget, an image whose path it does not admit takes the admitted path its
 * keep-probabilities rate most likely.
 */
data class Segment(val graph: String, val first: Int, val last: Int)  // blocks first..last fused, used when all run

data class CachedPath(val path: String, val graph: String, val frequency: Double)

data class Calibration(val images: Int, val usage: List<Double>, val coverage: Double)

data class PolicyDispatch(
    override val selector: String,  // graph emitting (N, K) keep-probabilities
    val stem: String,
    val head: String,
    val blocks: List<BlockStep>,
    val segments: List<Segment>,
    val cachedPaths: List<CachedPath>,
    val calibration: Calibration?,
    override val reference: String,
) : Section {
    override val rule = "policy"

    /** The graphs one sample on [path] calls, in order, selector first. */
    fun pathGraphs(path: String): List<String> {
        cachedPaths.firstOrNull { it.path == path }?.let { return listOf(selector, it.graph) }
        val keep = path.map { it == '1' }
        val fused = segments.associateBy { it.first }
        val called = mutableListOf(selector, stem)
        var k = 0
        while (k < blocks.size) {
            val segment = fused[k]
            val graph: String?
            if (segment != null && (segment.first..segment.last).all { keep[it] }) {
                graph = segment.graph
                k = segment.last + 1
            } else {
                graph = if (keep[k]) blocks[k].run else blocks[k].skip
                k += 1
            }
            if (graph != null) called += graph
        }
        return called + head
    }

    /** The cached paths: a path walked block by block costs calls that no budget should have to guess. */
    override fun operatingPoints(graphs: Map<String, Graph>): List<OperatingPoint> =
        cachedPaths.map { c -> OperatingPoint(c.path, "path", macs = pathGraphs(c.path).sumOf { graphs.getValue(it).macs }) }

    override fun worstCase(graphs: Map<String, Graph>): Pair<Long, String> {
        val perBlock = blocks.sumOf { step -> maxOf(step.run?.let { graphs.getValue(it).macs } ?: 0L, step.skip?.let { graphs.getValue(it).macs } ?: 0L) }
        return graphs.getValue(selector).macs + graphs.getValue(stem).macs + perBlock + graphs.getValue(head).macs to "every block"
    }

    override fun view(path: String) = blockView(path)
}

private fun parsePolicy(r: FieldReader, data: Map<String, Any?>, graphs: Map<String, Graph>, classes: Int): Section {
    val d = r.fields(
        data, "dispatch",
        setOf("rule", "selector", "stem", "head", "blocks", "segments", "cached_paths", "calibration", "reference"),
    )
    val steps = parseSteps(r, d["blocks"], graphs)
    val count = steps.size
    val selector = r.graph(d["selector"], "dispatch.selector")
    if (graphs.getValue(selector).outputs[0].shape != listOf(count)) {
        throw r.fail("dispatch.selector", "${Python.repr(selector)} must emit $count keep-probabilities, one per block")
    }
    val segments = r.list(d["segments"], "dispatch.segments").mapIndexed { i, item ->
        val where = "dispatch.segments[$i]"
        val entry = r.fields(item, where, setOf("graph", "first", "last"))
        val first = r.count(entry["first"], "$where.first")
        val last = r.count(entry["last"], "$where.last")
        if (!(first < last && last < count)) throw r.fail(where, "blocks $first..$last are not a run of at least two of the $count blocks")
        Segment(r.graph(entry["graph"], "$where.graph"), first, last)
    }
    val cached = r.list(d["cached_paths"], "dispatch.cached_paths").mapIndexed { i, item ->
        val where = "dispatch.cached_paths[$i]"
        val entry = r.fields(item, where, setOf("path", "graph", "frequency"))
        val path = r.text(entry["path"], "$where.path")
        try {
            parsePath(path, count)
        } catch (error: IllegalArgumentException) {
            throw r.fail("$where.path", error.message!!)
        }
        val graph = r.graph(entry["graph"], "$where.graph")
        r.logits(graph, classes)
        CachedPath(path, graph, r.number(entry["frequency"], "$where.frequency"))
    }
    val calibration = d["calibration"]?.let {
        val c = r.fields(it, "dispatch.calibration", setOf("images", "usage", "coverage"))
        Calibration(
            r.count(c["images"], "dispatch.calibration.images", 1),
            r.floats(c["usage"], "dispatch.calibration.usage", count),
            r.number(c["coverage"], "dispatch.calibration.coverage"),
        )
    }
    val head = r.graph(d["head"], "dispatch.head")
    r.logits(head, classes)
    val reference = r.graph(d["reference"], "dispatch.reference")
    r.logits(reference, classes)
    return PolicyDispatch(selector, r.graph(d["stem"], "dispatch.stem"), head, steps, segments, cached, calibration, reference)
}

private class PolicyDispatcher(manifest: Manifest) : Dispatcher {
    private val d = manifest.dispatch as PolicyDispatch
    private val count = d.blocks.size
    private val leftOut = BooleanArray(count) { d.blocks[it].run == null }
    private val cached = d.cachedPaths.associate { it.path to it.graph }
    private val segments = d.segments.associateBy { it.first }
    private val graphMacs = manifest.graphs.mapValues { it.value.macs }
    private val classes = manifest.classes.size
    private val plans = HashMap<String, Pair<List<String>, Long>>()  // path -> (graphs between stem and head, MACs)

    private fun plan(path: String) = plans.getOrPut(path) {
        val called = d.pathGraphs(path)
        called.drop(2).dropLast(1) to called.sumOf { graphMacs.getValue(it) }
    }

    override fun dispatch(call: GraphCall, batch: Tensor, request: Request): Decision {
        val n = batch.batch
        val only = request.admitted?.singleOrNull()
        if (request.path == null && only != null) {
            // A budget that admits one path leaves the selector nothing to choose: it is skipped, and not counted.
            val row = parsePath(only, count)
            return run(call, batch, Array(n) { row.copyOf() }, graphMacs.getValue(d.selector))
        }
        val probabilities = call(d.selector, batch)[0]
        val forced = request.path?.let { force ->
            val row = parsePath(force, count)
            if (force !in cached && row.indices.any { row[it] && leftOut[it] }) {  // a cached path runs whole, in one graph
                val blocks = leftOut.indices.filter { leftOut[it] }
                throw IllegalArgumentException("path ${Python.repr(force)} runs blocks ${Python.repr(blocks)}, which this bundle's plan left out")
            }
            row
        }
        val keep = Array(n) { i -> BooleanArray(count) { k -> forced?.get(k) ?: (probabilities.data[i * count + k] >= 0.5f && !leftOut[k]) } }
        if (forced == null && request.admitted != null) within(keep, probabilities, request.admitted)
        return run(call, batch, keep, 0L)
    }

    /** Each sample through the blocks [keep] marks; its MACs are its path's, less [uncounted] (a skipped selector's). */
    private fun run(call: GraphCall, batch: Tensor, keep: Array<BooleanArray>, uncounted: Long): Decision {
        val n = batch.batch
        val paths = pathStrings(keep)
        val samples = LinkedHashMap<String, MutableList<Int>>()
        paths.forEachIndexed { i, path -> samples.getOrPut(path) { mutableListOf() } += i }
        var logits = Tensor(intArrayOf(n, classes), FloatArray(n * classes))
        val uncached = mutableListOf<Int>()
        for ((path, rows) in samples) {
            val graph = cached[path]
            when {
                graph == null -> uncached += rows
                samples.size == 1 -> call(graph, batch)[0].data.copyInto(logits.data)
                else -> logits.scatterRows(rows.toIntArray(), call(graph, batch.rows(rows.toIntArray()))[0])
            }
        }
        if (uncached.size == n) {
            logits = walk(call, batch, keep, paths)
        } else if (uncached.isNotEmpty()) {
            val rows = uncached.sorted().toIntArray()
            logits.scatterRows(rows, walk(call, batch.rows(rows), Array(rows.size) { keep[rows[it]] }, rows.map { paths[it] }))
        }
        return Decision(logits, paths, LongArray(n) { plan(paths[it]).second - uncounted })
    }

    /**
     * Images whose policy path a budget does not admit take, in place, the
     * admitted path their keep-probabilities rate most likely: the highest
     * log-likelihood, the first of the sorted paths on ties. float32 throughout,
     * as Python's `np.log(np.clip(p, 1e-7, 1 - 1e-7))` and its float32 matmul.
     */
    private fun within(keep: Array<BooleanArray>, probabilities: Tensor, admitted: Set<String>) {
        val paths = pathStrings(keep)
        if (paths.all { it in admitted }) return
        val masks = admitted.sorted().map { parsePath(it, count) }
        val low = 1e-7.toFloat()
        val high = (1 - 1e-7).toFloat()
        for ((i, path) in paths.withIndex()) {
            if (path in admitted) continue
            val p = FloatArray(count) { k -> probabilities.data[i * count + k].coerceIn(low, high) }
            val logKept = FloatArray(count) { k -> ln(p[k].toDouble()).toFloat() }
            val logSkipped = FloatArray(count) { k -> ln1p(-p[k].toDouble()).toFloat() }
            val likelihood = masks.map { mask ->
                var kept = 0f
                var skipped = 0f
                for (k in 0 until count) if (mask[k]) kept += logKept[k] else skipped += logSkipped[k]
                kept + skipped
            }
            keep[i] = masks[likelihood.indices.maxBy { likelihood[it] }].copyOf()
        }
    }

    /** Logits of samples whose paths are not cached: stem, blocks, head, each graph once per subset. */
    private fun walk(call: GraphCall, images: Tensor, keep: Array<BooleanArray>, paths: List<String>): Tensor {
        var features = call(d.stem, images)[0]
        if (paths.toSet().size == 1) {  // one path: follow its plan, with no per-block bookkeeping
            for (graph in plan(paths[0]).first) features = call(graph, features)[0]
            return call(d.head, features)[0]
        }
        // pending[k]: (sample rows, their features) of the groups that reach block k next
        val pending = HashMap<Int, MutableList<Pair<IntArray, Tensor>>>()
        pending[0] = mutableListOf(IntArray(images.batch) { it } to features)
        for ((k, step) in d.blocks.withIndex()) {
            val parts = pending.remove(k) ?: continue
            val (rows, x) = merge(parts)
            val kept = BooleanArray(rows.size) { keep[rows[it]][k] }
            val skipped = BooleanArray(rows.size) { !kept[it] }
            // (which rows, graph, next block)
            var steps = listOf(Triple(kept, step.run, k + 1), Triple(skipped, step.skip, k + 1))
            val segment = segments[k]
            if (segment != null) {
                val fused = BooleanArray(rows.size) { i -> (k..segment.last).all { keep[rows[i]][it] } }
                val alone = BooleanArray(rows.size) { kept[it] && !fused[it] }
                steps = listOf(Triple(fused, segment.graph, segment.last + 1), Triple(alone, step.run, k + 1), steps[1])
            }
            for ((mask, graph, after) in steps) {
                val selected = mask.count { it }
                if (selected == 0) continue
                val subsetRows: IntArray
                val subset: Tensor
                if (selected == rows.size) {
                    subsetRows = rows
                    subset = x
                } else {
                    val picked = mask.indices.filter { mask[it] }.toIntArray()
                    subsetRows = IntArray(picked.size) { rows[picked[it]] }
                    subset = x.rows(picked)
                }
                val out = if (graph == null) subset else call(graph, subset)[0]  // null: an identity shortcut
                pending.getOrPut(after) { mutableListOf() } += subsetRows to out
            }
        }
        val (rows, x) = merge(pending.remove(count)!!)
        val logits = Tensor(intArrayOf(images.batch, classes), FloatArray(images.batch * classes))
        logits.scatterRows(rows, call(d.head, x)[0])
        return logits
    }

    private fun merge(parts: List<Pair<IntArray, Tensor>>): Pair<IntArray, Tensor> =
        if (parts.size == 1) parts[0] else parts.flatMap { it.first.asList() }.toIntArray() to Tensor.concat(parts.map { it.second })
}

val POLICY = Rule(name = "policy", parse = ::parsePolicy, dispatcher = ::PolicyDispatcher, since = 2)
