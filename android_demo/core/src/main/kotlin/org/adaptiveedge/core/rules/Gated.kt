package org.adaptiveedge.core.rules

import org.adaptiveedge.core.FieldReader
import org.adaptiveedge.core.Graph
import org.adaptiveedge.core.Manifest
import org.adaptiveedge.core.Python
import org.adaptiveedge.core.Tensor
import java.math.BigDecimal

/** The S sweep of the paper's Table 1: the operating points users ask for. */
val SCALES = listOf(0.2, 0.4, 0.6, 0.8, 1.0)

/**
 * `gated` (URNet): a gate before every block, steered by the user's compute
 * scale S. Every graph takes the features and S; the stem and each block's
 * `run` and `skip` graphs also emit the next gate's logit (open when > 0), and
 * the last block's graphs end in the head. In a batch, block k runs `run` once
 * over the samples whose gate is open and `skip` once over the rest.
 */
data class GatedDispatch(
    val stem: String,  // (image, scale) to (features, first gate logit)
    val blocks: List<BlockStep>,
    override val reference: String,
) : Section {
    override val rule = "gated"
    override val selector: String? = null

    /** The S sweep, each point named as Python's `f"S={s:g}"` names it, and without MACs: the gates decide them, image by image. */
    override fun operatingPoints(graphs: Map<String, Graph>): List<OperatingPoint> =
        SCALES.map { s -> OperatingPoint("S=" + BigDecimal.valueOf(s).stripTrailingZeros().toPlainString(), "scale", s) }

    override fun worstCase(graphs: Map<String, Graph>): Pair<Long, String> =
        graphs.getValue(stem).macs + blocks.sumOf { maxOf(graphs.getValue(it.run!!).macs, graphs.getValue(it.skip!!).macs) } to "every block"

    override fun view(path: String) = blockView(path)
}

private fun parseGated(r: FieldReader, data: Map<String, Any?>, graphs: Map<String, Graph>, classes: Int): Section {
    val d = r.fields(data, "dispatch", setOf("rule", "stem", "blocks", "reference"))
    val steps = parseSteps(r, d["blocks"], graphs)
    if (steps.any { it.run == null || it.skip == null }) {
        throw r.fail("dispatch.blocks", "a gated dispatch needs run and skip graphs for every block: they emit the gates")
    }
    for ((k, step) in steps.withIndex()) {
        for (graph in listOf(step.run!!, step.skip!!)) {
            if (k + 1 == steps.size) {
                r.logits(graph, classes)
            } else if (graphs.getValue(graph).outputs.size != 2) {
                throw r.fail("graphs[${Python.repr(graph)}].outputs", "a gated block graph emits (features, next gate logit)")
            }
        }
    }
    val reference = r.graph(d["reference"], "dispatch.reference")
    r.logits(reference, classes)
    return GatedDispatch(r.graph(d["stem"], "dispatch.stem"), steps, reference)
}

/** Version 2 gave a gated section the policy rule's fields, all unused; version 3 drops them. */
private fun upgradeGated(r: FieldReader, data: MutableMap<String, Any?>) {
    for ((field, unused) in listOf("selector" to null, "head" to null, "segments" to emptyList<Any?>(), "cached_paths" to emptyList<Any?>(), "calibration" to null)) {
        val value = if (field in data) data.remove(field) else unused
        if (value != unused) throw r.fail("dispatch.$field", "a gated dispatch has none, got ${Python.repr(value)}")
    }
}

private class GatedDispatcher(manifest: Manifest) : Dispatcher {
    private val d = manifest.dispatch as GatedDispatch
    private val stemMacs = manifest.graphs.getValue(d.stem).macs
    private val runMacs = d.blocks.map { manifest.graphs.getValue(it.run!!).macs }
    private val skipMacs = d.blocks.map { manifest.graphs.getValue(it.skip!!).macs }

    override fun dispatch(call: GraphCall, batch: Tensor, request: Request): Decision {
        val n = batch.batch
        val count = d.blocks.size
        val forced = request.path?.let { parsePath(it, count) }
        val scale = Tensor(intArrayOf(n), requireNotNull(request.scale) { "a gated bundle runs with a compute scale per sample" })
        var (features, gate) = call(d.stem, batch, scale)
        val opened = Array(n) { BooleanArray(count) }
        var outputs: List<Tensor> = emptyList()
        for ((k, step) in d.blocks.withIndex()) {
            val isOpen = BooleanArray(n) { i -> forced?.get(k) ?: (gate.data[i] > 0f) }
            for (i in 0 until n) opened[i][k] = isOpen[i]
            val running = isOpen.count { it }
            outputs = if (running == 0 || running == n) {
                call(if (running > 0) step.run!! else step.skip!!, features, scale)
            } else {
                val ran = isOpen.indices.filter { isOpen[it] }.toIntArray()
                val skipped = isOpen.indices.filter { !isOpen[it] }.toIntArray()
                val a = call(step.run!!, features.rows(ran), scale.rows(ran))
                val b = call(step.skip!!, features.rows(skipped), scale.rows(skipped))
                a.indices.map { j ->
                    Tensor.empty(n, a[j]).also { it.scatterRows(ran, a[j]); it.scatterRows(skipped, b[j]) }
                }
            }
            if (k + 1 < count) {
                features = outputs[0]
                gate = outputs[1]
            }
        }
        val macs = LongArray(n) { i -> stemMacs + (0 until count).sumOf { k -> if (opened[i][k]) runMacs[k] else skipMacs[k] } }
        return Decision(outputs[0], pathStrings(opened), macs)
    }
}

val GATED = Rule(name = "gated", parse = ::parseGated, dispatcher = ::GatedDispatcher, takesScale = true, since = 2, upgrade = ::upgradeGated)
