package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class SessionTest {
    private class Constant : GraphRunner {
        val batches = mutableListOf<Int>()
        override val backend = "executorch"
        override fun describe() = "constant outputs (test)"
        override fun run(graph: Graph, inputs: List<Tensor>): List<Tensor> {
            batches += inputs[0].batch
            return graph.outputs.map { spec ->
                val shape = intArrayOf(inputs[0].batch) + spec.shape.toIntArray()
                Tensor(shape, FloatArray(shape.fold(1) { n, d -> n * d }) { 0.5f })
            }
        }
    }

    private fun session(family: String, runner: GraphRunner = Constant(), device: String? = null) =
        Session(Manifest.parse(Golden.text("$family.manifest.json"), "m"), runner, device)

    private fun images(count: Int) = Images(count, 8, 8, 3, ByteArray(count * 8 * 8 * 3) { it.toByte() })

    @Test
    fun batchesLargerThanMaxBatchRunInChunks() {
        val runner = Constant()
        val s = session("drnet", runner)
        val result = s.run(images(9), static = true)
        assertEquals(listOf(4, 4, 1), runner.batches)
        assertEquals(9, result.logits.batch)
        assertEquals(List(9) { s.manifest.referenceMacs }, result.macs.toList())
    }

    /** The message a request is refused with. */
    private fun refusal(request: () -> Unit): String? = assertThrows(IllegalArgumentException::class.java) { request() }.message

    @Test
    fun requestsTheBundleCannotTakeAreRefused() {
        val drnet = session("drnet")
        assertEquals("pass either path= or static=True, not both", refusal { drnet.run(images(1), path = "res16", static = true) })
        assertEquals("pass either path= or a budget, not both", refusal { drnet.run(images(1), path = "res16", budgetMacs = 1e9) })
        assertEquals(
            "pass either scale= or a budget, not both: the budget picks S",
            refusal { drnet.run(images(1), scale = doubleArrayOf(0.5), budgetMacs = 1e9) },
        )
        val resizable = session("resizable")
        assertEquals(
            "budget_ms: latency is measured per device; pass device= to runtime.load", refusal { resizable.run(images(1), budgetMs = 5.0) },
        )
        assertEquals("budget_macs must be a positive number, got -1.0", refusal { resizable.run(images(1), budgetMacs = -1.0) })
        val urnet = session("urnet")
        assertEquals(
            "a budget in URNet's MACs at each S needs this device's latency table: $TABLE_HINT",
            refusal { urnet.run(images(1), budgetMacs = 1e9) },
        )
        assertEquals(
            "scale must be one number or one per image (2), got shape (3,)",
            refusal { urnet.run(images(2), scale = doubleArrayOf(0.1, 0.2, 0.3)) },
        )
    }
}
