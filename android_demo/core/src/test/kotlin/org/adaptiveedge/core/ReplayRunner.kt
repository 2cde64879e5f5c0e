@file:Suppress("UNCHECKED_CAST")

package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import kotlin.math.abs

/**
 * A [GraphRunner] that answers each call with the outputs the Python runtime
 * recorded for it, after checking that it is the same call: the same graph,
 * in the same order, on the same samples. Feature maps travel as one
 * fingerprint per row ([Golden]), so a row routed to the wrong group, or a
 * group called in another order, is caught.
 */
class ReplayRunner(private val calls: List<Map<String, Any?>>) : GraphRunner {
    override val backend = "executorch"
    private var next = 0

    override fun describe() = "replay of ${calls.size} recorded calls"

    override fun run(graph: Graph, inputs: List<Tensor>): List<Tensor> {
        assertTrue("call ${next + 1} to ${graph.name}: Python made only ${calls.size} calls", next < calls.size)
        val call = calls[next++]
        assertEquals("graph of call $next", call["graph"], graph.name)
        val recorded = call["inputs"] as List<Map<String, Any?>>
        assertEquals("inputs of call $next (${graph.name})", recorded.size, inputs.size)
        for ((j, expected) in recorded.withIndex()) checkInput("call $next (${graph.name}) input $j", expected, inputs[j])
        return (call["outputs"] as List<Map<String, Any?>>).map(::output)
    }

    fun assertAllCalled() = assertEquals("graph calls made", calls.size, next)

    private fun checkInput(where: String, expected: Map<String, Any?>, actual: Tensor) {
        val shape = Golden.shape(expected)
        assertEquals("$where batch", shape[0], actual.batch)
        if (Golden.isWhole(expected)) {
            val values = Golden.tensor(expected).data
            assertEquals("$where size", values.size, actual.data.size)
            for (i in values.indices) assertEquals("$where value $i", values[i], actual.data[i], 1e-5f)
            return
        }
        val prints = Golden.fingerprints(expected)
        if (actual.rowSize == 1 && shape.drop(1).fold(1) { n, d -> n * d } > 1) {
            // A stand-in this runner returned earlier: its value is the fingerprint itself.
            for (i in prints.indices) assertEquals("$where row $i", prints[i].toFloat(), actual.data[i])
        } else {
            val mine = Golden.fingerprints(actual)
            for (i in prints.indices) {
                assertTrue("$where row $i: fingerprint ${mine[i]} vs Python's ${prints[i]}", abs(mine[i] - prints[i]) <= 1e-5 * (1 + abs(prints[i])))
            }
        }
    }

    /** Whole tensors as recorded; feature maps as one stand-in value per row, their fingerprint. */
    private fun output(encoded: Map<String, Any?>): Tensor =
        if (Golden.isWhole(encoded)) Golden.tensor(encoded)
        else Golden.fingerprints(encoded).let { p -> Tensor(intArrayOf(p.size, 1), FloatArray(p.size) { p[it].toFloat() }) }
}
